"""Compare streams both sides at once: chunks arrive interleaved, errors end only their own side."""

import threading
import time

from emotune.services.ui.streams import interleave


def ticking(prefix, n, delay, fail_at=None):
    def open_stream():
        for i in range(n):
            if i == fail_at:
                raise RuntimeError(f"{prefix} broke")
            time.sleep(delay)
            yield f"{prefix}{i}"
    return open_stream


def test_chunks_of_both_sides_interleave():
    events = list(interleave({"left": ticking("L", 5, 0.03), "right": ticking("R", 5, 0.03)}))
    texts = [e.text for e in events if not e.done]
    assert sorted(texts) == sorted([f"L{i}" for i in range(5)] + [f"R{i}" for i in range(5)])
    # streamed side by side: the right side started before the left one finished
    assert texts.index("R0") < texts.index("L4")
    assert [e.key for e in events if e.done] and all(e.error is None for e in events if e.done)
    assert sum(e.done for e in events) == 2


def test_an_error_ends_only_its_side():
    events = list(interleave({"left": ticking("L", 4, 0.01, fail_at=2), "right": ticking("R", 4, 0.01)}))
    done = {e.key: e for e in events if e.done}
    assert isinstance(done["left"].error, RuntimeError) and "L broke" in str(done["left"].error)
    assert done["right"].error is None
    assert [e.text for e in events if e.key == "right" and not e.done] == ["R0", "R1", "R2", "R3"]


def test_closing_early_stops_the_workers():
    produced = []

    def endless():
        for i in range(10_000):
            produced.append(i)
            time.sleep(0.005)
            yield str(i)

    before = threading.active_count()
    stream = interleave({"x": lambda: endless()})
    next(stream)
    stream.close()
    time.sleep(0.1)
    count = len(produced)
    time.sleep(0.1)
    assert len(produced) <= count + 1 < 100
    assert threading.active_count() <= before
