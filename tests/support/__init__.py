"""Reusable test infrastructure (real servers on loopback) shared by the service test suites."""
