"""emotune inference service."""
