"""``/v1/files``: uploads for fine-tuning (chat JSONL, checked like OpenAI's checker) and styles documents."""
