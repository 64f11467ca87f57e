"""Turning generated token ids into clean streamed text: incremental detokenization and stop strings.

Both are engine-independent and pure, so they are tested without a model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

REPLACEMENT_CHAR = "\ufffd"


class IncrementalDecoder:
    """Emit the text of each new token as soon as it is complete.

    Decoding token by token breaks multi-byte characters (a Chinese character is often 2-3 byte tokens) and
    loses the spaces some tokenizers attach to the following token; so we re-decode a short window
    (``prefix_offset``..end) and emit only what it adds, holding back text that ends in U+FFFD.
    """

    def __init__(self, decode: Callable[[Sequence[int]], str]) -> None:
        self._decode = decode
        self.ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def push(self, token_ids: Sequence[int]) -> str:
        self.ids.extend(token_ids)
        prefix = self._decode(self.ids[self._prefix_offset:self._read_offset])
        text = self._decode(self.ids[self._prefix_offset:])
        if len(text) > len(prefix) and not text.endswith(REPLACEMENT_CHAR):
            self._prefix_offset, self._read_offset = self._read_offset, len(self.ids)
            return text[len(prefix):]
        return ""


class StopMatcher:
    """Cut a text stream before the first stop string; text that could begin a stop string is held back
    until it is clear, so a stop string split across tokens never leaks into the output."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.stopped = False
        self._pending = ""

    def feed(self, text: str) -> str:
        """The part of ``text`` (plus held-back text) that is safe to emit now."""
        if self.stopped:
            return ""
        buffer = self._pending + text
        if not self.stops:
            self._pending = ""
            return buffer
        hits = [i for i in (buffer.find(stop) for stop in self.stops) if i >= 0]
        if hits:
            self.stopped, self._pending = True, ""
            return buffer[:min(hits)]
        hold = max((k for stop in self.stops for k in range(1, len(stop)) if buffer.endswith(stop[:k])),
                   default=0)
        self._pending = buffer[len(buffer) - hold:] if hold else ""
        return buffer[:len(buffer) - hold]

    def flush(self) -> str:
        """What was held back, once the stream ended without completing a stop string."""
        text, self._pending = ("" if self.stopped else self._pending), ""
        return text
