"""Data in and out: the internal record (``records``), styles, the files people bring (``importers``, ``textio``),
OpenAI's chat and preference JSONL (``chat_jsonl``, ``preference``), the trainers' formats (``formats``) and the
one reader of a dataset in the store (``datasets``)."""
