"""The UI's only way out: the emotune gateway, through the official ``openai`` client (models, chat, files,
fine-tuning jobs) and httpx for emotune's extensions (job report, plots).

Every failure becomes a :class:`GatewayError` whose message a person can act on ("the gateway refused the API
key", "model X is not served any more", "overloaded, retry in 5 s") instead of a traceback.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import openai
from openai.types.fine_tuning import FineTuningJob

from emotune.services.ui.config import UISettings

ErrorKind = Literal["auth", "not_found", "overloaded", "unreachable", "bad_request", "server"]


class GatewayError(Exception):
    """A gateway call failed; ``message`` is written for the person using the UI."""

    def __init__(self, kind: ErrorKind, message: str, *, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.status, self.retry_after = kind, message, status, retry_after


def _retry_after(headers: Any) -> float | None:
    try:
        return float(headers.get("retry-after"))
    except (TypeError, ValueError):
        return None


def _server_message(body: object, fallback: str) -> str:
    """The ``message`` of an OpenAI error body (``{"error": {"message": ...}}`` or already unwrapped)."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(body.get("detail"), str):
            return body["detail"]
    return fallback


def classify(status: int, server_message: str, *, retry_after: float | None = None,
             model: str | None = None) -> GatewayError:
    """Turn an HTTP failure into the plain explanation shown in the UI."""
    server_message = server_message.rstrip(". ")
    if status in (401, 403):
        return GatewayError("auth", f"The gateway refused the API key ({status}): {server_message}. "
                                    "Enter a valid key in the sidebar (or, as the operator, set "
                                    "EMOTUNE_UI_API_KEY).", status=status)
    if status == 404:
        what = f"Model {model!r} is not served by the gateway (any more)" if model else "Not found"
        return GatewayError("not_found", f"{what} (404): {server_message}", status=status)
    if status == 429 or (status == 503 and retry_after is not None):
        wait = f"; retry in {retry_after:g} s" if retry_after is not None else "; retry in a moment"
        return GatewayError("overloaded", f"The gateway is overloaded ({status}): {server_message}{wait}.",
                            status=status, retry_after=retry_after)
    if 400 <= status < 500:
        return GatewayError("bad_request", f"The gateway rejected the request ({status}): {server_message}",
                            status=status)
    return GatewayError("server", f"The gateway failed ({status}): {server_message}", status=status,
                        retry_after=retry_after)


def explain(exc: Exception, base_url: str, *, model: str | None = None) -> GatewayError:
    """Map an ``openai`` / ``httpx`` exception to a :class:`GatewayError`."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, openai.APIStatusError):
        return classify(exc.status_code, _server_message(exc.body, exc.message),
                        retry_after=_retry_after(exc.response.headers), model=model)
    if isinstance(exc, httpx.HTTPStatusError):
        try:
            body = exc.response.json()
        except ValueError:
            body = None
        return classify(exc.response.status_code, _server_message(body, exc.response.text[:300]),
                        retry_after=_retry_after(exc.response.headers), model=model)
    if isinstance(exc, (openai.APITimeoutError, httpx.TimeoutException)):
        return GatewayError("unreachable", f"The gateway at {base_url} did not answer in time.")
    if isinstance(exc, (openai.APIConnectionError, httpx.TransportError)):
        return GatewayError("unreachable", f"Cannot reach the gateway at {base_url}: is it running? "
                                           "(EMOTUNE_GATEWAY_URL)")
    if isinstance(exc, openai.APIError):  # an error event inside an SSE stream
        return GatewayError("server", f"The gateway reported an error while streaming: "
                                      f"{_server_message(exc.body, exc.message)}")
    raise exc


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 256


@dataclass
class ChatStream:
    """Text deltas of one streamed answer; after iteration ``finish_reason`` and ``usage`` are known."""

    _chunks: Any
    base_url: str
    model: str
    finish_reason: str | None = None
    usage: dict[str, int] = field(default_factory=dict)

    def __iter__(self) -> Iterator[str]:
        try:
            for chunk in self._chunks:
                if chunk.usage:
                    self.usage = {"prompt_tokens": chunk.usage.prompt_tokens,
                                  "completion_tokens": chunk.usage.completion_tokens}
                for choice in chunk.choices:
                    if choice.finish_reason:
                        self.finish_reason = choice.finish_reason
                    if choice.delta and choice.delta.content:
                        yield choice.delta.content
        except Exception as exc:
            raise explain(exc, self.base_url, model=self.model) from exc
        finally:
            self.close()

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close:
            close()


class Gateway:
    """Thin client of the gateway's public API (the same one any app uses)."""

    def __init__(self, settings: UISettings, api_key: str | None = None) -> None:
        """``api_key``: the visitor's own key; without one, the operator's ``EMOTUNE_UI_API_KEY`` (none is sent
        when neither is given: the gateway answers 401)."""
        self.base_url = settings.api_base
        key = api_key or (settings.ui_api_key.get_secret_value() if settings.ui_api_key else "none")
        self._openai = openai.OpenAI(base_url=self.base_url, api_key=key,
                                     timeout=settings.ui_request_timeout_seconds,
                                     max_retries=settings.ui_max_retries)
        self._http = httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {key}"},
                                  timeout=settings.ui_request_timeout_seconds)

    def _call(self, fn: Any, *args: Any, about_model: str | None = None, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise explain(exc, self.base_url, model=about_model) from exc

    def _get_json(self, path: str) -> Any:
        def get() -> Any:
            response = self._http.get(path)
            response.raise_for_status()
            return response.json()
        return self._call(get)

    # ---- chat -------------------------------------------------------------------------------------------
    def model_ids(self) -> list[str]:
        return [m.id for m in self._call(self._openai.models.list)]

    def stream_chat(self, model: str, messages: list[dict[str, str]], sampling: Sampling) -> ChatStream:
        """Start a streamed completion; errors before the first token raise here, later ones while iterating."""
        chunks = self._call(
            self._openai.chat.completions.create, about_model=model, model=model, messages=messages,
            stream=True, stream_options={"include_usage": True}, temperature=sampling.temperature,
            top_p=sampling.top_p, max_tokens=sampling.max_tokens,
        )
        return ChatStream(chunks, self.base_url, model)

    # ---- fine-tuning ------------------------------------------------------------------------------------
    def upload_file(self, filename: str, content: bytes, purpose: str) -> dict[str, Any]:
        """Upload a file (``fine-tune`` JSONL, ``emotune-styles`` YAML, questions); the gateway validates it."""
        return self._call(self._openai.files.create, file=(filename, content), purpose=purpose).model_dump()

    def create_job(self, request: dict[str, Any]) -> dict[str, Any]:
        """POST the job as given: the emotune generation spec has no ``training_file``, which the typed
        ``jobs.create`` would require. The client's retries of this one call carry one ``Idempotency-Key``: a
        retry after a timeout gets the job the first attempt created, not a second one."""
        job = self._call(self._openai.post, "/fine_tuning/jobs", body=request, cast_to=FineTuningJob,
                         options={"headers": {"Idempotency-Key": f"ui-{uuid.uuid4().hex}"}})
        return job.model_dump()

    def list_jobs(self, limit: int = 20) -> list[dict[str, Any]]:
        page = self._call(self._openai.fine_tuning.jobs.list, limit=limit)
        return [job.model_dump() for job in page.data]

    def job(self, job_id: str) -> dict[str, Any]:
        return self._call(self._openai.fine_tuning.jobs.retrieve, job_id).model_dump()

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self._call(self._openai.fine_tuning.jobs.cancel, job_id).model_dump()

    def new_events(self, job_id: str, known: set[str], page_size: int = 100) -> list[dict[str, Any]]:
        """Events not in ``known``, newest first: pages back through the log until a known event is met."""
        fresh: list[dict[str, Any]] = []

        def collect() -> None:
            for event in self._openai.fine_tuning.jobs.list_events(job_id, limit=page_size):  # auto-paginates
                if event.id in known:
                    return
                fresh.append(event.model_dump())

        self._call(collect)
        return fresh

    def checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        page = self._call(self._openai.fine_tuning.jobs.checkpoints.list, job_id)
        return [c.model_dump() for c in page.data]

    def report(self, job_id: str) -> dict[str, Any] | None:
        """The emotune job report, or None while no stage has produced one yet."""
        try:
            return self._get_json(f"/fine_tuning/jobs/{job_id}/report")
        except GatewayError as err:
            if err.kind == "not_found":
                return None
            raise

    def plot(self, url_or_name: str, job_id: str) -> bytes:
        """PNG bytes of a report plot, given the report's URL for it or its bare name."""
        path = url_or_name if "/" in url_or_name else f"/fine_tuning/jobs/{job_id}/plots/{url_or_name}.png"
        if path.startswith(("http://", "https://")):
            url = path
        else:  # relative to the API base whether or not it repeats "/v1"
            url = path.removeprefix("/v1").lstrip("/")

        def get() -> bytes:
            response = self._http.get(url)
            response.raise_for_status()
            return response.content
        return self._call(get)

    def close(self) -> None:
        self._openai.close()
        self._http.close()
