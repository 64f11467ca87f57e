"""emotune gateway service."""
