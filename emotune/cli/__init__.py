"""The ``emotune`` command (``main``) and its commands that talk to a running gateway (``gateway_commands``)."""
