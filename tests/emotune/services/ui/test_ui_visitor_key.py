"""The UI holds no key of its own (issue 29, item 2): without EMOTUNE_UI_API_KEY it asks the visitor for theirs and
calls the gateway with nothing else. The "gateway" here is a real loopback listener recording each request's
Authorization header; the pages run through Streamlit's AppTest."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from emotune.services.ui.widgets import KEY_STATE

MODELS = {"object": "list", "data": [{"id": "smollm2-135m", "object": "model", "created": 0, "owned_by": "emotune"}]}


class _Recorder(BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str]]] = []

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Authorization", "")))
        data = json.dumps(MODELS if self.path.endswith("/models") else {"object": "list", "data": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recording_gateway():
    _Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Recorder.seen
    server.shutdown()
    server.server_close()


def test_without_a_configured_key_the_visitor_is_asked_for_theirs(recording_gateway, ui_app, monkeypatch):
    url, seen = recording_gateway
    monkeypatch.delenv("EMOTUNE_UI_API_KEY", raising=False)
    monkeypatch.setenv("EMOTUNE_API_KEY", "sk-server-cli-key")  # a key of the host's: never the UI's
    at = ui_app(EMOTUNE_GATEWAY_URL=url).run()
    assert not at.exception
    assert any("Enter your emotune API key" in info.value for info in at.info)
    assert at.text_input(key=KEY_STATE).value == ""
    assert seen == [], "the UI called the gateway before the visitor gave a key"

    at.text_input(key=KEY_STATE).input("sk-visitor-1").run()
    assert not at.exception and not at.info
    assert seen and {auth for _path, auth in seen} == {"Bearer sk-visitor-1"}

    calls = len(seen)
    other = ui_app(EMOTUNE_GATEWAY_URL=url).run()  # another visitor's session: nothing of the first one's key
    assert any("Enter your emotune API key" in info.value for info in other.info)
    assert len(seen) == calls


def test_an_operator_key_is_used_when_configured(recording_gateway, ui_app):
    url, seen = recording_gateway
    at = ui_app(EMOTUNE_GATEWAY_URL=url, EMOTUNE_UI_API_KEY="sk-operator").run()
    assert not at.exception and not at.info
    assert not [w for w in at.text_input if w.key == KEY_STATE]
    assert {auth for _path, auth in seen} == {"Bearer sk-operator"}
