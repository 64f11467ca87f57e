"""Reading the server-sent events of llama-server and vLLM (httpx-sse): events split only where SSE says."""

from __future__ import annotations

import json

import httpx
from httpx_sse import EventSource


async def test_unicode_line_breaks_inside_a_json_event_do_not_cut_it():
    """JSON leaves U+2028 / U+0085 unescaped; a token holding one must not split its event (it did with
    httpx's aiter_lines: a 500 found by the gateway fuzz test). Line ends CR LF, LF and CR alone all end a line;
    one space after the colon is dropped, and data lines of one event join with LF."""
    events = [{"content": "a\u2028b\x85c\u2029d", "stop": False}, {"content": "你好", "stop": True}]
    for end in ("\r\n", "\n", "\r"):
        body = "".join(f"data: {json.dumps(e, ensure_ascii=False)}{end}{end}" for e in events)
        body += f": keep-alive{end}{end}data:no-space{end}{end}data: two{end}data:  lines{end}{end}"
        raw = body.encode()

        async def blocks(raw=raw):  # split mid-character and mid-line, as a network would
            for start in range(0, len(raw), 7):
                yield raw[start:start + 7]

        response = httpx.Response(200, content=blocks(), headers={"content-type": "text/event-stream"})
        data = [sse.data async for sse in EventSource(response).aiter_sse()]
        assert [json.loads(d) for d in data[:2]] == events, repr(end)
        assert data[2:] == ["no-space", "two\n lines"], repr(end)
