"""A real teacher LLM endpoint on loopback for tests: OpenAI chat completions and the ZhipuAI SDK's wire format.

It is an actual HTTP server (uvicorn + Starlette in a background thread), so clients go through their real stack
(the ``openai`` SDK, the ``zhipuai`` SDK, httpx): connection pools, timeouts, status-code handling, body parsing.

Routes (one server answers all of them):
  POST /v1/chat/completions                  OpenAI format (DeepSeek, vLLM, LMDeploy, emotune's gateway)
  POST /compatible-mode/v1/chat/completions  DashScope's OpenAI-compatible mode
  POST /api/paas/v4/chat/completions         ZhipuAI (what ``zhipuai.ZhipuAI(base_url=...)`` calls)
  GET  /v1/models, /compatible-mode/v1/models, /healthz

Faults are injected per request, deterministically, so tests can assert exact outcomes under concurrency:
  ``server.script("关键词", Fault.RATE_LIMIT, Fault.SERVER_ERROR)``: every distinct request whose prompt contains
  "关键词" gets a 429, then (on its retry) a 500, then succeeds;
  ``server.always("敏感", Fault.SAFETY_ZHIPUAI)``: those requests always get ZhipuAI's content-safety 400 (1301);
  ``server.chaos(0.3, [Fault.RATE_LIMIT, ...], seed=1)``: a hash of (request, attempt) picks a fault for ~30 %.
Error bodies follow each provider's real shape (see ``Fault``); ``latency`` delays every answer; ``retry_after``
is sent with 429/503. ``responder`` turns a request body into the reply text (deterministic by default).

Standalone: ``python -m tests.support.teacher_server --port 8089 --latency 0.2``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


class Fault(StrEnum):
    OK = "ok"
    # 429 with Retry-After (ZhipuAI path: code 1302 "并发数过高"; OpenAI path: rate_limit_exceeded).
    RATE_LIMIT = "rate_limit"
    SERVER_ERROR = "server_error"  # 500
    UNAVAILABLE = "unavailable"  # 503 with Retry-After
    TIMEOUT = "timeout"  # accept the request, answer nothing for ``hang_seconds``
    MALFORMED = "malformed"  # 200, application/json, truncated JSON body
    NO_CHOICES = "no_choices"  # 200, valid JSON without ``choices``
    EMPTY = "empty"  # 200, a choice whose content is ""
    CONTENT_FILTER = "content_filter"  # 200, finish_reason "content_filter" (OpenAI / Azure style)
    # 400 {"error": {"code": "1301", "message": "系统检测到输入或生成内容可能包含不安全或敏感内容..."}}
    SAFETY_ZHIPUAI = "safety_zhipuai"
    # 400 {"error": {"code": "data_inspection_failed", "type": "data_inspection_failed", ...}} (compatible mode)
    SAFETY_DASHSCOPE = "safety_dashscope"
    # 400 {"code": "DataInspectionFailed", "message": ..., "request_id": ...} (DashScope native API)
    SAFETY_DASHSCOPE_NATIVE = "safety_dashscope_native"
    AUTH = "auth"  # 401 in the route's shape
    QUOTA = "quota"  # 429 ZhipuAI 1113 (account in arrears): not retryable


ZHIPUAI_SAFETY_MESSAGE = "系统检测到输入或生成内容可能包含不安全或敏感内容，请您避免输入易产生敏感内容的提示语，感谢您的配合。"
DASHSCOPE_SAFETY_MESSAGE = "Input data may contain inappropriate content."


@dataclass
class TeacherCall:
    """One request as the server saw it (for assertions)."""

    path: str
    flavour: str  # "openai", "dashscope", "zhipuai"
    body: dict[str, Any]
    authorization: str
    attempt: int  # 0 for the first time this exact request was seen
    fault: Fault
    started: float
    finished: float = 0.0

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.body.get("messages") or []

    @property
    def prompt_text(self) -> str:
        return "\n".join(str(m.get("content", "")) for m in self.messages)

    @property
    def last_user(self) -> str:
        return next((str(m.get("content", "")) for m in reversed(self.messages) if m.get("role") == "user"), "")


def echo_responder(body: dict[str, Any]) -> str:
    """Deterministic default reply: depends only on the request, so two runs produce identical datasets."""
    messages = body.get("messages") or []
    last_user = next((str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), "")
    digest = hashlib.sha256(json.dumps(messages, ensure_ascii=False, sort_keys=True).encode()).hexdigest()[:6]
    return f"收到啦~ 关于「{last_user[:40]}」，我的回答是 {digest}。"


@dataclass
class _Rule:
    match: str
    faults: tuple[Fault, ...]
    repeat_last: bool


@dataclass
class _Chaos:
    rate: float
    faults: tuple[Fault, ...]
    seed: int


def _flavour(path: str) -> str:
    if path.startswith("/api/paas/"):
        return "zhipuai"
    if path.startswith("/compatible-mode/"):
        return "dashscope"
    return "openai"


def _request_key(body: dict[str, Any]) -> str:
    identity = {"model": body.get("model"), "messages": body.get("messages")}
    return hashlib.sha256(json.dumps(identity, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


@dataclass
class TeacherServer:
    latency: float = 0.0
    retry_after: float = 1.0
    hang_seconds: float = 30.0
    # When set, requests must carry ``Authorization: Bearer <api_key>`` (else 401).
    api_key: str | None = None
    model_ids: Sequence[str] = ("teacher-test",)
    responder: Callable[[dict[str, Any]], str] = echo_responder
    host: str = "127.0.0.1"
    port: int = 0

    calls: list[TeacherCall] = field(default_factory=list, init=False)
    in_flight: int = field(default=0, init=False)
    max_in_flight: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._rules: list[_Rule] = []
        self._chaos: _Chaos | None = None
        self._attempts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # ----- programming faults -----
    def script(self, match: str, *faults: Fault) -> TeacherServer:
        """Requests containing ``match`` get ``faults[n]`` on their n-th attempt, then succeed."""
        with self._lock:
            self._rules.append(_Rule(match, tuple(faults), repeat_last=False))
        return self

    def always(self, match: str, fault: Fault) -> TeacherServer:
        """Requests containing ``match`` (``""`` = every request) always get ``fault``."""
        with self._lock:
            self._rules.append(_Rule(match, (fault,), repeat_last=True))
        return self

    def chaos(self, rate: float, faults: Sequence[Fault], seed: int = 0) -> TeacherServer:
        """For requests no rule matched: a hash of (request, attempt, seed) injects one of ``faults`` with
        probability ``rate`` — reproducible, unlike random.random()."""
        with self._lock:
            self._chaos = _Chaos(rate, tuple(faults), seed)
        return self

    def reset(self) -> None:
        with self._lock:
            self._rules.clear()
            self._chaos = None
            self._attempts.clear()
            self.calls.clear()
            self.max_in_flight = self.in_flight

    def _decide(self, body: dict[str, Any]) -> tuple[int, Fault]:
        key = _request_key(body)
        text = "\n".join(str(m.get("content", "")) for m in body.get("messages") or [])
        with self._lock:
            attempt = self._attempts.get(key, 0)
            self._attempts[key] = attempt + 1
            for rule in self._rules:
                if rule.match in text:
                    if attempt < len(rule.faults):
                        return attempt, rule.faults[attempt]
                    return attempt, rule.faults[-1] if rule.repeat_last else Fault.OK
            chaos = self._chaos
        if chaos and chaos.faults:
            roll = int(hashlib.sha256(f"{chaos.seed}:{key}:{attempt}".encode()).hexdigest()[:8], 16)
            if (roll % 10_000) / 10_000 < chaos.rate:
                return attempt, chaos.faults[roll % len(chaos.faults)]
        return attempt, Fault.OK

    # ----- queries for tests -----
    def calls_matching(self, text: str) -> list[TeacherCall]:
        return [c for c in list(self.calls) if text in c.prompt_text]

    def distinct_requests(self) -> int:
        return len({_request_key(c.body) for c in list(self.calls)})

    # ----- lifecycle -----
    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """For the ``openai`` SDK (and any OpenAI-compatible client)."""
        return f"{self.origin}/v1"

    @property
    def dashscope_base_url(self) -> str:
        return f"{self.origin}/compatible-mode/v1"

    @property
    def zhipuai_base_url(self) -> str:
        """For ``zhipuai.ZhipuAI(base_url=...)``."""
        return f"{self.origin}/api/paas/v4"

    def start(self) -> Self:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app(), log_level="warning", lifespan="off", access_log=False,
            timeout_graceful_shutdown=1, timeout_keep_alive=30, backlog=2048,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="teacher-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("teacher server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----- HTTP -----
    def _app(self) -> Starlette:
        return Starlette(routes=[
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/compatible-mode/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/api/paas/v4/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/compatible-mode/v1/models", self._models, methods=["GET"]),
            Route("/healthz", lambda _r: JSONResponse({"status": "ok"}), methods=["GET"]),
        ])

    async def _models(self, _request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": "emotune-tests"} for m in self.model_ids
        ]})

    async def _chat(self, request: Request) -> Response:
        flavour = _flavour(request.url.path)
        try:
            body = json.loads(await request.body())
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                raise TypeError("'messages' must be a list")
        except (ValueError, TypeError) as exc:
            return _error(flavour, 400, f"invalid request body: {exc}", "invalid_request_error", "1214")
        authorization = request.headers.get("authorization", "")
        attempt, fault = self._decide(body)
        if self.api_key is not None and authorization != f"Bearer {self.api_key}":
            fault = Fault.AUTH
        call = TeacherCall(request.url.path, flavour, body, authorization, attempt, fault, time.monotonic())
        self.calls.append(call)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.latency)
            if fault is Fault.TIMEOUT:
                try:
                    await asyncio.sleep(self.hang_seconds)
                except asyncio.CancelledError:  # the server is stopping while this request hangs
                    return Response(status_code=503)
            return self._answer(flavour, body, fault)
        finally:
            self.in_flight -= 1
            call.finished = time.monotonic()

    def _answer(self, flavour: str, body: dict[str, Any], fault: Fault) -> Response:
        retry_headers = {"Retry-After": f"{self.retry_after:g}"}
        match fault:
            case Fault.RATE_LIMIT:
                return _error(flavour, 429, "您当前使用该API的并发数过高，请降低并发，或联系客服增加限额。"
                              if flavour == "zhipuai" else "Rate limit reached for requests",
                              "rate_limit_exceeded", "1302", retry_headers)
            case Fault.QUOTA:
                return _error(flavour, 429, "您的账户已欠费，请充值后重试。" if flavour == "zhipuai"
                              else "You exceeded your current quota", "insufficient_quota", "1113")
            case Fault.SERVER_ERROR:
                return _error(flavour, 500, "Internal server error", "server_error", "500")
            case Fault.UNAVAILABLE:
                return _error(flavour, 503, "The server is overloaded", "server_error", "1305", retry_headers)
            case Fault.AUTH:
                return _error(flavour, 401, "令牌已过期或验证不正确" if flavour == "zhipuai" else "Incorrect API key",
                              "invalid_api_key", "1001")
            case Fault.SAFETY_ZHIPUAI:
                return JSONResponse({"error": {"code": "1301", "message": ZHIPUAI_SAFETY_MESSAGE}}, status_code=400)
            case Fault.SAFETY_DASHSCOPE:
                return JSONResponse({"error": {"code": "data_inspection_failed", "param": None,
                                               "message": DASHSCOPE_SAFETY_MESSAGE,
                                               "type": "data_inspection_failed"},
                                     "id": f"chatcmpl-{uuid.uuid4().hex}"}, status_code=400)
            case Fault.SAFETY_DASHSCOPE_NATIVE:
                return JSONResponse({"code": "DataInspectionFailed", "message": DASHSCOPE_SAFETY_MESSAGE,
                                     "request_id": str(uuid.uuid4())}, status_code=400)
            case Fault.MALFORMED:
                return Response('{"id": "chatcmpl-broken", "choices": [{"index": 0, "message": {"role": "assi',
                                media_type="application/json")
            case Fault.NO_CHOICES:
                return JSONResponse({"id": "chatcmpl-empty", "object": "chat.completion", "created": 0,
                                     "model": body.get("model", "")})
        text = "" if fault in (Fault.EMPTY, Fault.CONTENT_FILTER) else _until_stop(self.responder(body), body)
        finish = "content_filter" if fault is Fault.CONTENT_FILTER else "stop"
        if body.get("stream"):
            return StreamingResponse(_sse_chunks(body, text, finish), media_type="text/event-stream")
        return JSONResponse(_completion(flavour, body, text, finish))


def _error(flavour: str, status: int, message: str, openai_code: str, zhipuai_code: str,
           headers: dict[str, str] | None = None) -> JSONResponse:
    if flavour == "zhipuai":
        payload = {"error": {"code": zhipuai_code, "message": message}}
    else:
        kind = "requests" if status == 429 else ("server_error" if status >= 500 else "invalid_request_error")
        payload = {"error": {"message": message, "type": kind, "param": None, "code": openai_code}}
    return JSONResponse(payload, status_code=status, headers=headers)


def _usage(body: dict[str, Any], text: str) -> dict[str, int]:
    prompt = sum(len(str(m.get("content", ""))) for m in body.get("messages") or [])
    return {"prompt_tokens": prompt, "completion_tokens": len(text), "total_tokens": prompt + len(text)}


def _until_stop(text: str, body: dict[str, Any]) -> str:
    """As the real APIs do: the reply ends before the first occurrence of any ``stop`` string (str or list)."""
    stops = body.get("stop") or []
    for stop in [stops] if isinstance(stops, str) else stops:
        if stop and stop in text:
            text = text[: text.index(stop)]
    return text


def _completion(flavour: str, body: dict[str, Any], text: str, finish: str) -> dict[str, Any]:
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    payload: dict[str, Any] = {
        "id": completion_id, "object": "chat.completion", "created": int(time.time()),
        "model": body.get("model", ""),
        "choices": [{"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": text}}],
        "usage": _usage(body, text),
    }
    if flavour == "zhipuai":
        payload["request_id"] = completion_id
    return payload


async def _sse_chunks(body: dict[str, Any], text: str, finish: str):
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"

    def chunk(delta: dict[str, Any], finish_reason: str | None) -> str:
        data = {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()),
                "model": body.get("model", ""),
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": ""}, None)
    for start in range(0, len(text), 4):
        yield chunk({"content": text[start:start + 4]}, None)
        await asyncio.sleep(0)
    yield chunk({}, finish)
    yield "data: [DONE]\n\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before every answer")
    parser.add_argument("--retry-after", type=float, default=1.0)
    parser.add_argument("--chaos", type=float, default=0.0, help="share of requests answered 429/500")
    args = parser.parse_args(argv)
    server = TeacherServer(latency=args.latency, retry_after=args.retry_after, port=args.port)
    if args.chaos:
        server.chaos(args.chaos, [Fault.RATE_LIMIT, Fault.SERVER_ERROR])
    server.start()
    print(f"teacher server on {server.base_url} (zhipuai: {server.zhipuai_base_url})", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
