"""The pipeline service: fine-tuning jobs end to end (datagen -> validator -> trainer -> serving -> evaluation)."""
