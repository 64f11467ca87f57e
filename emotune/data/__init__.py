"""Data in and out: the internal record (``records``), styles, the files people bring (``importers``, ``textio``),
OpenAI's chat and preference JSONL (``chat_jsonl``, ``preference``) and the trainers' formats (``formats``)."""
