"""Teacher LLMs behind one interface, and the one place where their errors are classified.

Two adapters: :class:`OpenAICompatibleTeacher` (the OpenAI chat-completions wire protocol over aiohttp: DeepSeek,
DashScope compatible mode, vLLM, LMDeploy, emotune's own gateway serving a base model; or, with the
``completion`` prompt format, legacy ``/completions`` with the few-shot written as one chat-log document) and
:class:`ZhipuAITeacher` (the ``zhipuai`` SDK, its own retries off). Retries, backoff and Retry-After are handled
once, in ``request_policy``.

Every failure becomes a :class:`TeacherError` with a ``reason`` and a :class:`FailureKind`:
retryable (429, 5xx, timeouts, connection errors, malformed bodies, empty replies, unparsable JSON output),
final for this sample (content-safety refusals such as ZhipuAI 1301 or DashScope DataInspectionFailed, other
400s) or fatal for the job (bad key, exhausted quota, unknown model: every further request would fail the same).
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any, Literal, Protocol

import aiohttp

from emotune.errors import FailedPrecondition
from emotune.services.datagen.egress import PublicOnlyResolver
from emotune.settings import Settings


class FailureKind(StrEnum):
    RETRYABLE = "retryable"
    FINAL = "final"
    FATAL = "fatal"


class TeacherError(Exception):
    """A classified teacher failure; ``attempts`` and ``retry_reasons`` are filled in by the retry loop."""

    def __init__(self, reason: str, message: str, kind: FailureKind, *, status: int | None = None,
                 code: str = "", retry_after: float | None = None) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason, self.message, self.kind = reason, message, kind
        self.status, self.code, self.retry_after = status, code, retry_after
        self.attempts = 0
        self.retry_reasons: list[str] = []

    @property
    def retryable(self) -> bool:
        return self.kind is FailureKind.RETRYABLE


@dataclass(frozen=True)
class TeacherReply:
    text: str
    model: str
    finish_reason: str
    response_id: str = ""
    usage: dict[str, Any] = field(default_factory=dict)


class Teacher(Protocol):
    provider: str
    model: str
    base_url: str

    async def complete(self, messages: list[dict[str, str]], *, temperature: float, max_tokens: int,
                       stop: Sequence[str] = ()) -> TeacherReply:
        """One chat completion (ending before any ``stop`` string); raises :class:`TeacherError` on any failure."""

    async def aclose(self) -> None: ...


# Codes / types providers use for a content-safety refusal (compared case-insensitively).
SAFETY_CODES = frozenset({"1301", "data_inspection_failed", "datainspectionfailed", "content_filter",
                          "content_policy_violation", "sensitive"})
SAFETY_PHRASES = ("content exists risk", "inappropriate content", "敏感内容", "不安全")
QUOTA_CODES = frozenset({"1113", "insufficient_quota", "arrearage"})
NOT_FOUND_CODES = frozenset({"1211", "model_not_found"})  # ZhipuAI 1211: 模型不存在


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    if not headers:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _error_fields(body: Any) -> tuple[str, str, str]:
    """(code, type, message) from ``{"error": {...}}`` (OpenAI, ZhipuAI, DashScope compatible mode), the SDK's
    already-unwrapped inner object, or DashScope's native ``{"code", "message"}``."""
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return "", "", body[:500]
    if not isinstance(body, dict):
        return "", "", ""
    inner = body.get("error") if isinstance(body.get("error"), dict) else body
    return str(inner.get("code") or ""), str(inner.get("type") or ""), str(inner.get("message") or "")


def classify_http_error(status: int, body: Any, headers: Mapping[str, str] | None = None) -> TeacherError:
    """Map an HTTP error answer of any supported provider to a classified :class:`TeacherError`."""
    code, kind_field, message = _error_fields(body)
    message = message or f"HTTP {status}"
    codes = {code.lower(), kind_field.lower()}
    details = {"status": status, "code": code}
    if status == 429:
        if codes & QUOTA_CODES:
            return TeacherError("quota", message, FailureKind.FATAL, **details)
        return TeacherError("rate_limited", message, FailureKind.RETRYABLE, retry_after=parse_retry_after(headers),
                            **details)
    if status >= 500 or status in (408, 409):
        return TeacherError("server_error", message, FailureKind.RETRYABLE, retry_after=parse_retry_after(headers),
                            **details)
    if status in (401, 403):
        return TeacherError("auth", message, FailureKind.FATAL, **details)
    if status == 404 or codes & NOT_FOUND_CODES:
        return TeacherError("model_not_found", message, FailureKind.FATAL, **details)
    if codes & SAFETY_CODES or any(p in message.lower() for p in SAFETY_PHRASES):
        return TeacherError("content_safety", message, FailureKind.FINAL, **details)
    return TeacherError("bad_request", message, FailureKind.FINAL, **details)


def reply_from_response(data: Any) -> TeacherReply:
    """The first choice of a chat-completion (``message.content``) or text-completion (``text``) body as a
    reply; a missing/empty/filtered one is classified."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise TeacherError("malformed_response", "the response has no choices", FailureKind.RETRYABLE)
    choice = choices[0]
    finish = str(choice.get("finish_reason") or "")
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    text = str(message.get("content") or choice.get("text") or "")
    if finish.lower() in SAFETY_CODES:  # OpenAI/Azure "content_filter", ZhipuAI "sensitive"
        raise TeacherError("content_safety", f"generation stopped by the provider's filter ({finish})",
                           FailureKind.FINAL, code=finish)
    if finish == "network_error":  # ZhipuAI: inference interrupted on their side
        raise TeacherError("server_error", "the provider reported network_error", FailureKind.RETRYABLE)
    if not text.strip():
        raise TeacherError("empty_reply", f"empty reply (finish_reason={finish or 'none'})", FailureKind.RETRYABLE)
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return TeacherReply(text, str(data.get("model") or ""), finish, str(data.get("id") or ""),
                        {k: v for k, v in usage.items() if isinstance(v, int)})


PromptFormat = Literal["chat", "completion"]
MAX_STOPS = 4  # OpenAI's limit
_CJK = re.compile(r"[\u3400-\u9fff]")


def chat_log_document(messages: Sequence[Mapping[str, str]]) -> tuple[str, str]:
    """A conversation written as the chat log a base model continues best (few-shot as a document, not as chat
    turns): the system prompt as the heading, one labelled line per turn, ending with the reply's label.

    Returns the document and the next turn's label, the stop string that ends the reply."""
    chinese = any(_CJK.search(m["content"]) for m in messages)
    friend, me, colon = ("朋友", "我", "：") if chinese else ("Friend", "Me", ": ")
    heading = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    intro = f"以下是{me}和{friend}的聊天记录，{me}的每句话都是上面说的风格。" if chinese else \
        f"Below is a chat log between {me} and a {friend}; every line of {me} is in the style described above."
    turns = [f"{me if m['role'] == 'assistant' else friend}{colon}{m['content']}" for m in messages
             if m["role"] != "system"]
    document = "\n\n".join(part for part in (heading, intro, "\n".join(turns)) if part)
    # No trailing space: BPE vocabularies attach a space to the following word ("Me:" + " Sure").
    return f"{document}\n{me}{colon.rstrip()}", f"\n{friend}{colon.rstrip()}"


class OpenAICompatibleTeacher:
    """Any OpenAI-compatible chat endpoint (``POST {base_url}/chat/completions``) over aiohttp.

    aiohttp rather than the ``openai`` SDK or httpx: measured on this 2-core machine under load, one request
    costs ~1 ms of CPU with aiohttp against ~5-7 ms with the SDK (httpx underneath), which capped a job at
    ~30 samples/s instead of 100+; the SDK's typed errors would be flattened back to (status, body, headers) for
    classification anyway. With the ``chat`` prompt format (default) few-shot turns travel as messages; with
    ``completion`` the conversation is one chat-log document (:func:`chat_log_document`) continued on
    ``/completions``, which suits a base model better than chat turns in a template it was never tuned on.
    """

    provider = "openai"

    def __init__(self, base_url: str, model: str, api_key: str | None, timeout: float,
                 max_connections: int = 64, prompt_format: PromptFormat = "chat", *,
                 request_chosen: bool = False) -> None:
        self.base_url, self.model = base_url.rstrip("/"), model
        self.prompt_format = prompt_format
        # A URL the request chose gets no key, reaches public addresses only, follows no redirect and has its
        # error bodies reduced to the status (they are the answers of a host nobody vetted).
        self.request_chosen = request_chosen
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key and not request_chosen else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 10.0))
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:  # created on first use: a session belongs to the running event loop
            resolver = PublicOnlyResolver() if self.request_chosen else None
            self._session = aiohttp.ClientSession(
                headers=self._headers, timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=self._max_connections, resolver=resolver))
        return self._session

    async def complete(self, messages: list[dict[str, str]], *, temperature: float, max_tokens: int,
                       stop: Sequence[str] = ()) -> TeacherReply:
        body: dict[str, Any] = {"model": self.model, "temperature": temperature, "max_tokens": max_tokens}
        if self.prompt_format == "completion":
            body["prompt"], next_turn = chat_log_document(messages)
            stop = [next_turn, *stop][:MAX_STOPS]
            path = "completions"
        else:
            body["messages"], path = messages, "chat/completions"
        if stop:
            body["stop"] = list(stop)
        try:
            async with self._client().post(f"{self.base_url}/{path}", json=body,
                                           allow_redirects=not self.request_chosen) as response:
                payload = await response.read()
                status, headers = response.status, response.headers
        except TimeoutError:
            raise TeacherError("timeout", f"no answer within {self._timeout.total:g} s",
                               FailureKind.RETRYABLE) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise TeacherError("connection", f"{type(exc).__name__}: {exc}", FailureKind.RETRYABLE) from None
        text = payload.decode("utf-8", errors="replace")
        if status >= 400 or (self.request_chosen and status >= 300):
            error = classify_http_error(status, text, headers)
            raise short_error(error) if self.request_chosen else error
        try:
            data = json.loads(text)
        except ValueError as exc:  # truncated or non-JSON body with a 2xx status
            raise TeacherError("malformed_response", f"body is not JSON: {exc}", FailureKind.RETRYABLE) from None
        reply = reply_from_response(data)
        # A continued chat log starts after "Me:": the reply is what follows the label's space.
        text = reply.text.lstrip() if self.prompt_format == "completion" else reply.text
        return TeacherReply(text, reply.model or self.model, reply.finish_reason, reply.response_id, reply.usage)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class ZhipuAITeacher:
    """ZhipuAI through its own SDK (synchronous: calls run on a private thread pool sized to the concurrency)."""

    provider = "zhipuai"

    def __init__(self, base_url: str, model: str, api_key: str, timeout: float, max_workers: int) -> None:
        import zhipuai

        self._zhipuai = zhipuai
        self.base_url, self.model = base_url, model
        self._client = zhipuai.ZhipuAI(api_key=api_key, base_url=base_url or None, timeout=timeout, max_retries=0)
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="zhipuai")

    async def complete(self, messages: list[dict[str, str]], *, temperature: float, max_tokens: int,
                       stop: Sequence[str] = ()) -> TeacherReply:
        zhipuai = self._zhipuai
        call = functools.partial(self._client.chat.completions.create, model=self.model, messages=messages,
                                 temperature=temperature, max_tokens=max_tokens, stop=list(stop) or None)
        try:
            response = await asyncio.get_running_loop().run_in_executor(self._pool, call)
        except zhipuai.APITimeoutError as exc:
            raise TeacherError("timeout", str(exc), FailureKind.RETRYABLE) from None
        except zhipuai.APIConnectionError as exc:
            raise TeacherError("connection", str(exc), FailureKind.RETRYABLE) from None
        except zhipuai.APIStatusError as exc:
            raise classify_http_error(exc.status_code, exc.response.text, exc.response.headers) from None
        except (zhipuai.APIResponseValidationError, ValueError) as exc:
            raise TeacherError("malformed_response", f"{type(exc).__name__}: {exc}", FailureKind.RETRYABLE) from None
        reply = reply_from_response(response.model_dump())
        return reply if reply.model else TeacherReply(reply.text, self.model, reply.finish_reason,
                                                      reply.response_id, reply.usage)

    async def aclose(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self._client.close)


def short_error(error: TeacherError) -> TeacherError:
    """``error`` keeping its classification but none of the body's text: the reason and the HTTP status only."""
    short = TeacherError(error.reason, f"HTTP {error.status}", error.kind, status=error.status,
                         retry_after=error.retry_after)
    short.attempts, short.retry_reasons = error.attempts, error.retry_reasons
    return short


def resolve_api_key(teacher_name: str, provider: str, api_key_env: str, settings: Settings) -> str | None:
    """The key of the operator's teacher ``teacher_name``, from the secret its settings name (a request never
    names one: ``api_key_env`` here comes from the operator's teacher definition)."""
    if api_key_env:
        key = settings.secret(api_key_env)
        if not key:
            raise FailedPrecondition(f"teacher {teacher_name!r} needs its API key: {api_key_env} is not set in the "
                                     "datagen service's environment (or its secrets directory)", field="teacher.name")
        return key
    if provider == "zhipuai":
        if settings.zhipuai_api_key is None or not settings.zhipuai_api_key.get_secret_value().strip():
            raise FailedPrecondition(f"teacher {teacher_name!r} (ZhipuAI) needs ZHIPUAI_API_KEY (or "
                                     "EMOTUNE_ZHIPUAI_API_KEY, or /run/secrets/zhipuai_api_key) in the datagen "
                                     "service's environment", field="teacher.name")
        return settings.zhipuai_api_key.get_secret_value()
    return None


def build_teacher(provider: str, base_url: str, model: str, api_key: str | None, timeout: float,
                  max_concurrency: int, prompt_format: PromptFormat = "chat", *,
                  request_chosen: bool = False) -> Teacher:
    if provider == "zhipuai":
        if request_chosen:  # the SDK would send its key wherever base_url points
            raise ValueError("a request-chosen URL is never used with the ZhipuAI SDK")
        return ZhipuAITeacher(base_url, model, api_key or "", timeout, max_concurrency)
    return OpenAICompatibleTeacher(base_url, model, api_key, timeout, max_connections=max_concurrency,
                                   prompt_format=prompt_format, request_chosen=request_chosen)
