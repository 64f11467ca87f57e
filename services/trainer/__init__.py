"""emotune trainer service."""
