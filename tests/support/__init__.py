"""Reusable test infrastructure (real servers on loopback) shared by the service test suites."""

from emotune.models.server_process import free_port

__all__ = ["free_port"]
