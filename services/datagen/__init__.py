"""emotune datagen service."""
