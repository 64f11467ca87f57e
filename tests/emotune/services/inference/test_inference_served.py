"""Reading the server-sent events of llama-server (and any engine server): events split only where SSE says."""

from __future__ import annotations

import json

import httpx

from emotune.services.inference.engines.served import event_lines


async def test_unicode_line_breaks_inside_a_json_event_do_not_cut_it():
    """JSON leaves U+2028 / U+0085 unescaped; a token holding one must not split its event (it did with
    httpx's aiter_lines: a 500 found by the gateway fuzz test)."""
    events = [{"content": "a\u2028b\x85c\x1cd", "stop": False}, {"content": "你好", "stop": True}]
    body = "".join(f"data: {json.dumps(e, ensure_ascii=False)}\r\n\r\n" for e in events).encode()

    async def blocks():  # split mid-character and mid-line, as a network would
        for start in range(0, len(body), 7):
            yield body[start:start + 7]

    lines = [line async for line in event_lines(httpx.Response(200, content=blocks()))]
    assert [json.loads(line[6:]) for line in lines if line] == events
