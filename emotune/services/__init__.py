"""The services, one package each, with the same inner shape: ``__main__``, ``config``, a thin transport
(``server`` for gRPC, routers for the gateway, views for the UI), ``service`` and plain domain modules."""
