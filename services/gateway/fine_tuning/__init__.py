"""``/v1/fine_tuning/jobs``: OpenAI's fine-tuning surface driving emotune's pipeline
(datagen -> validator -> trainer -> evaluation -> serving)."""
