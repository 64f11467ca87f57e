"""emotune validator service."""
