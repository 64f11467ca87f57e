"""Consume several token streams at once so the Compare page shows them growing side by side.

Streamlit elements may only be written from the script thread, so each stream is drained by a worker thread
into one queue, and the script thread renders whatever arrives, from whichever side, as it arrives.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class StreamEvent:
    key: Hashable
    text: str = ""
    done: bool = False
    error: BaseException | None = None


def interleave(sources: dict[Hashable, Callable[[], Iterable[str]]]) -> Iterator[StreamEvent]:
    """Yield text chunks of every source in arrival order, then one ``done`` event per source (with the error
    that ended it, if any). Each source is a callable opening its stream, so opening happens in parallel too.
    Closing the iterator early stops the workers at their next chunk."""
    events: queue.Queue[StreamEvent] = queue.Queue()
    stop = threading.Event()

    def drain(key: Hashable, open_stream: Callable[[], Iterable[str]]) -> None:
        error: BaseException | None = None
        try:
            for text in open_stream():
                if stop.is_set():
                    break
                events.put(StreamEvent(key, text=text))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which decides how to show it
            error = exc
        events.put(StreamEvent(key, done=True, error=error))

    workers = [threading.Thread(target=drain, args=item, daemon=True, name=f"stream-{item[0]}")
               for item in sources.items()]
    for worker in workers:
        worker.start()
    remaining = len(workers)
    try:
        while remaining:
            event = events.get()
            remaining -= event.done
            yield event
    finally:
        stop.set()
