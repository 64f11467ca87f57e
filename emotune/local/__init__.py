"""The embedded default: all services as local processes (``emotune local ...``)."""
