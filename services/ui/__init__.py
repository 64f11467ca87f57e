"""emotune ui service."""
