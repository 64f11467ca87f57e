"""gRPC bootstrap shared by every service: server factory, error interceptor, client channels, health probe."""
