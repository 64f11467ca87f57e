"""Your own voice: fine-tune on your own chat history (WeChat and ChatGPT exports). ``sources`` reads an export
as conversations, ``cleaning`` turns them into samples (every rule counted), ``job`` builds a voice job's data."""
