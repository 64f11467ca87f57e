"""Serving speed: the CPU engines side by side, and the gateway (HTTP, OpenAI API) vs straight gRPC.

Every server runs as its own process on loopback (``python -m emotune.services.inference`` / ``python -m
emotune.services.gateway`` exactly as deployed, or a bare ``llama-server``); this process is only the client. One
configuration runs at a time (two on the same cores would slow each other), all on the same model, prompts and
greedy decoding, one stream at a time (``EMOTUNE_INFERENCE_MAX_CONCURRENCY=1``, one llama.cpp slot).

1. Engines: ``transformers`` and ``llamacpp`` (the inference service with ``EMOTUNE_INFERENCE_ENGINE`` set to
   each, read over gRPC) and a raw ``llama-server`` with no emotune in front, given over ``/completion`` the
   same prompt token ids emotune builds (``ChatFormat.prompt_ids``) and the same sampling fields the llamacpp
   engine sends. Decode tokens/s of one stream = (completion tokens - 1) / (last message - first text), median
   of 3 replies to a long-story prompt (each reply's completion token count is printed: fewer than asked means
   it ended on eos); TTFT = request sent to first text, p50 of ``--iterations`` short prompts.
   Targets: llamacpp / transformers decode >= 4x; raw / llamacpp decode <= 1.05x (emotune's overhead).
2. Gateway vs direct gRPC, on the default engine (llamacpp); requests alternate between the two paths (so load
   on the machine hits both alike) and both must produce the same tokens:
   p50 latency of a short non-streamed completion, gateway / direct (target <= 1.05x), and streaming time to
   first token, gateway minus direct, p50 (target <= +10 ms).

    python -m benchmarks.serving_latency [--model gemma3-270m] [--iterations 20] [--max-tokens 8]
        [--story-tokens 64]
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import grpc
import httpx
import typer
from httpx_sse import EventSource

from emotune.grpc.probe import check
from emotune.models.server_process import free_port
from emotune.v1 import inference_pb2, inference_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "sk-benchmark-serving-latency"
PROMPT = "用一句话安慰一个加班到深夜的朋友。"
STORY = "给我讲一个关于一只勇敢小猫的长故事。"
RAW = "raw llama-server"

# One reply, message by message: (text delta, completion tokens so far, or 0 where a path counts only at the
# end). Open(content, max_tokens) starts one on a path.
Stream = AsyncIterator[tuple[str, int]]
Open = Callable[[str, int], Stream]


@dataclass(frozen=True)
class Options:
    """The command's options, as every measurement reads them."""

    model: str
    iterations: int
    max_tokens: int
    story_tokens: int


# Servers ---------------------------------------------------------------------------------------------------
@contextmanager
def servers(model: str, engine: str = "llamacpp", gateway: bool = True) -> Iterator[tuple[str, str | None]]:
    """The inference service on ``engine`` (and the gateway in front of it): (gRPC address, gateway URL)."""
    grpc_port, metrics_port, http_port = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "EMOTUNE_INFERENCE_ADDR": f"127.0.0.1:{grpc_port}",
               "EMOTUNE_METRICS_PORT": str(metrics_port), "EMOTUNE_INFERENCE_PRELOAD": model,
               "EMOTUNE_INFERENCE_ENGINE": engine, "EMOTUNE_INFERENCE_MAX_CONCURRENCY": "1",
               "EMOTUNE_STORE_PATH": tmp, "EMOTUNE_GATEWAY_PORT": str(http_port),
               "EMOTUNE_GATEWAY_API_KEYS": API_KEY, "EMOTUNE_LOG_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1"}
        names = ("inference", "gateway") if gateway else ("inference",)
        procs = [subprocess.Popen([sys.executable, "-m", f"emotune.services.{name}"], cwd=ROOT, env=env)
                 for name in names]
        try:
            deadline = time.monotonic() + 600
            while not check(f"127.0.0.1:{grpc_port}", timeout=1.0):
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    raise RuntimeError(f"the services ({engine} engine) did not start")
                time.sleep(0.5)
            yield f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{http_port}" if gateway else None
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(30)


@contextmanager
def raw_llama_server(model: str) -> Iterator[tuple[str, Callable[[str], list[int]]]]:
    """A bare llama-server on the GGUF the llamacpp engine serves for ``model``, started as the engine starts
    it (emotune's template, one slot, default context and threads).

    Yields its URL and content -> emotune's prompt ids for that one user message."""
    from emotune.models.basemodels import packaged_gguf, resolve_base_model
    from emotune.models.chat_template import ChatFormat
    from emotune.models.llamacpp import LlamaCpp, LlamaServer, base_gguf
    from emotune.settings import Settings

    cache = Settings().cache_dir
    tools, model_dir = LlamaCpp.locate(cache), resolve_base_model(model, cache)
    chat_format = ChatFormat.from_pretrained(model_dir)
    gguf = base_gguf(tools, cache, model_dir, packaged_gguf(model, cache))
    with tempfile.TemporaryDirectory() as workdir, \
            LlamaServer(tools, gguf, Path(workdir), template=chat_format.template, slots=1) as server:
        yield server.url, lambda content: chat_format.prompt_ids([{"role": "user", "content": content}])


# Requests --------------------------------------------------------------------------------------------------
def grpc_request(model: str, content: str, max_tokens: int,
                 whole_reply: bool = False) -> inference_pb2.ChatRequest:
    """Greedy; top_p 1 explicitly, so every path (and the raw server) samples with the same fields."""
    return inference_pb2.ChatRequest(
        model=model, messages=[inference_pb2.ChatMessage(role="user", content=content)],
        sampling=inference_pb2.SamplingParams(max_tokens=max_tokens, temperature=0, top_p=1),
        whole_reply=whole_reply)


def http_body(model: str, max_tokens: int, stream: bool) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens,
            "temperature": 0, "top_p": 1, "stream": stream}


def completion_body(prompt_ids: list[int], max_tokens: int) -> dict:
    """What the llamacpp engine posts to ``/completion`` for a greedy request (LlamaCppModel.request_body)."""
    return {"prompt": prompt_ids, "n_predict": max_tokens, "stream": True, "temperature": 0.0, "top_p": 1.0,
            "top_k": 0, "min_p": 0.0, "typical_p": 1.0, "repeat_penalty": 1.0, "seed": -1, "stop": [],
            "cache_prompt": False, "return_tokens": True, "lora": []}


async def grpc_stream(stub, model: str, content: str, max_tokens: int) -> Stream:
    async for chunk in stub.Chat(grpc_request(model, content, max_tokens)):
        yield chunk.text, chunk.usage.completion_tokens


async def llama_stream(http: httpx.AsyncClient, prompt_ids: list[int], max_tokens: int) -> Stream:
    count = 0
    async with http.stream("POST", "/completion", json=completion_body(prompt_ids, max_tokens)) as response:
        response.raise_for_status()
        async for sse in EventSource(response).aiter_sse():
            if sse.data:
                event = json.loads(sse.data)
                tokens = len(event.get("tokens") or [])
                count = event["tokens_predicted"] if event.get("stop") else count + tokens
                yield event.get("content") or "", count


@dataclass
class Timed:
    ttft: float  # request sent -> first text
    decode: float  # first text -> last message
    tokens: int
    text: str

    @property
    def tokens_per_second(self) -> float:
        return (self.tokens - 1) / self.decode if self.tokens > 1 and self.decode > 0 else 0.0


async def timed(stream: Stream) -> Timed:
    """Reads the whole stream (the next request must not queue behind this one); one clock for every path."""
    started, first, tokens, parts = time.perf_counter(), None, 0, []
    async for text, count in stream:
        if text and first is None:
            first = time.perf_counter()
        parts.append(text)
        tokens = count or tokens
    end = time.perf_counter()
    first = first or end
    return Timed(first - started, end - first, tokens, "".join(parts))


# Measurements ----------------------------------------------------------------------------------------------
@dataclass
class EngineRun:
    ttft: list[float]
    stories: list[Timed]

    @property
    def decode(self) -> float:
        return statistics.median(story.tokens_per_second for story in self.stories)


async def measure_engine(open_stream: Open, args: Options) -> EngineRun:
    for _ in range(2):  # warm-up: first calls pay for lazy initialisation
        await timed(open_stream(PROMPT, args.max_tokens))
    await timed(open_stream(STORY, 8))
    ttft = []
    for iteration in range(args.iterations):
        print(f"  ttft {iteration + 1}/{args.iterations}", file=sys.stderr, flush=True)
        ttft.append((await timed(open_stream(PROMPT, args.max_tokens))).ttft)
    stories = [await timed(open_stream(STORY, args.story_tokens)) for _ in range(3)]
    return EngineRun(ttft, stories)


async def grpc_engine(args: Options, grpc_address: str) -> EngineRun:
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        return await measure_engine(lambda content, n: grpc_stream(stub, args.model, content, n), args)


async def raw_engine(args: Options, url: str, prompt_ids: Callable[[str], list[int]]) -> EngineRun:
    ids = {content: prompt_ids(content) for content in (PROMPT, STORY)}
    # A new connection per request, none kept alive: llama-server may close an idle one just as the next
    # request is sent on it. One client all the same: a new httpx client costs ~30 ms (its SSL context).
    async with httpx.AsyncClient(base_url=url, timeout=600,
                                 limits=httpx.Limits(max_keepalive_connections=0)) as http:
        return await measure_engine(lambda content, n: llama_stream(http, ids[content], n), args)


async def direct_complete(stub, model: str, max_tokens: int) -> tuple[float, str]:
    """(seconds, text) of the call the gateway makes for a non-streamed completion, straight to gRPC."""
    started = time.perf_counter()
    request = grpc_request(model, PROMPT, max_tokens, whole_reply=True)
    parts = [chunk.text async for chunk in stub.Chat(request)]
    return time.perf_counter() - started, "".join(parts)


async def direct_ttft(stub, model: str, max_tokens: int) -> float:
    return (await timed(grpc_stream(stub, model, PROMPT, max_tokens))).ttft


async def gateway_complete(http: httpx.AsyncClient, model: str, max_tokens: int) -> tuple[float, str]:
    started = time.perf_counter()
    response = await http.post("/v1/chat/completions", json=http_body(model, max_tokens, False))
    response.raise_for_status()
    return time.perf_counter() - started, response.json()["choices"][0]["message"]["content"]


async def gateway_ttft(http: httpx.AsyncClient, model: str, max_tokens: int) -> float:
    started, first = time.perf_counter(), None
    body = http_body(model, max_tokens, True)
    async with http.stream("POST", "/v1/chat/completions", json=body) as response:
        async for sse in EventSource(response).aiter_sse():
            if first is None and sse.data.startswith("{"):
                choices = json.loads(sse.data)["choices"]
                if choices and choices[0]["delta"].get("content"):
                    first = time.perf_counter() - started
    return first or 0.0


@dataclass
class GatewayRun:
    direct_total: list[float]
    gateway_total: list[float]
    direct_first: list[float]
    gateway_first: list[float]


async def gateway_vs_direct(args: Options, grpc_address: str, base_url: str) -> GatewayRun:
    model, max_tokens = args.model, args.max_tokens
    async with grpc.aio.insecure_channel(grpc_address) as channel, httpx.AsyncClient(
            base_url=base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=600) as http:
        stub = inference_pb2_grpc.InferenceStub(channel)
        for _ in range(60):
            if (await http.get("/readyz")).status_code == 200:
                break
            await asyncio.sleep(0.5)
        for _ in range(3):  # warm-up: first calls pay for lazy initialisation on both sides
            await direct_complete(stub, model, max_tokens)
            await gateway_complete(http, model, max_tokens)
            await direct_ttft(stub, model, max_tokens)
            await gateway_ttft(http, model, max_tokens)

        run = GatewayRun([], [], [], [])
        for iteration in range(args.iterations):
            print(f"  gateway {iteration + 1}/{args.iterations}", file=sys.stderr, flush=True)
            total, text = await direct_complete(stub, model, max_tokens)
            via_gateway, gateway_text = await gateway_complete(http, model, max_tokens)
            assert gateway_text == text, "both paths must generate the same tokens"
            run.direct_total.append(total)
            run.gateway_total.append(via_gateway)
            run.direct_first.append(await direct_ttft(stub, model, max_tokens))
            run.gateway_first.append(await gateway_ttft(http, model, max_tokens))
    return run


# Report ----------------------------------------------------------------------------------------------------
def target(label: str, value: str, goal: str, ok: bool) -> str:
    return f"{label:38} {value:>10}  target {goal:9} {'ok' if ok else 'MISSED'}"


def print_engines(args: Options, runs: dict[str, EngineRun]) -> None:
    p50 = statistics.median
    print(f"\nengines, model {args.model}, 1 stream, greedy: decode = median of 3 x {args.story_tokens}-token"
          f" long-story replies, TTFT = p50 of {args.iterations} short prompts "
          f"(max_tokens={args.max_tokens})")
    print(f"{'':26} {'decode tok/s':>12} {'TTFT p50 ms':>12}  completion tokens")
    for name, run in runs.items():
        counts = [story.tokens for story in run.stories]
        note = "  (ended on eos before max_tokens)" if min(counts) < args.story_tokens else ""
        print(f"{name if name == RAW else f'{name} engine (gRPC)':26} {run.decode:12.1f} "
              f"{p50(run.ttft) * 1000:12.1f}  {'/'.join(map(str, counts))}{note}")
    llamacpp, raw = runs["llamacpp"], runs[RAW]
    speedup, overhead = llamacpp.decode / runs["transformers"].decode, raw.decode / llamacpp.decode
    print(target("llamacpp / transformers decode", f"{speedup:.2f}x", ">= 4x", speedup >= 4))
    print(target("raw / llamacpp decode (our overhead)", f"{overhead:.3f}x", "<= 1.05x", overhead <= 1.05))
    print(f"{'TTFT llamacpp - raw, p50':38} {(p50(llamacpp.ttft) - p50(raw.ttft)) * 1000:+7.1f} ms")
    same = all(a.text == b.text for a, b in zip(llamacpp.stories, raw.stories, strict=True))
    print(f"{'llamacpp engine replies == raw replies':38} {'yes' if same else 'NO':>10}")


def print_gateway(args: Options, run: GatewayRun) -> None:
    p50 = statistics.median
    direct_ms, gateway_ms = p50(run.direct_total) * 1000, p50(run.gateway_total) * 1000
    direct_first_ms, gateway_first_ms = p50(run.direct_first) * 1000, p50(run.gateway_first) * 1000
    ratio, overhead_ms = gateway_ms / direct_ms, gateway_first_ms - direct_first_ms
    print(f"\ngateway vs direct gRPC, llamacpp engine, model {args.model}, {args.iterations} interleaved "
          f"requests, max_tokens={args.max_tokens}")
    print(f"{'p50 (ms)':38} {'direct':>10} {'gateway':>10}")
    print(f"{'non-streamed completion':38} {direct_ms:10.1f} {gateway_ms:10.1f}")
    print(f"{'streaming time to first token':38} {direct_first_ms:10.1f} {gateway_first_ms:10.1f}")
    print(target("completion gateway / direct", f"{ratio:.3f}x", "<= 1.05x", ratio <= 1.05))
    print(target("TTFT gateway - direct", f"{overhead_ms:+.1f} ms", "<= +10 ms", overhead_ms <= 10))


app = typer.Typer(add_completion=False)


@app.command(help=__doc__.splitlines()[0])
def main(model: str = "gemma3-270m",
         iterations: Annotated[int, typer.Option(help="short requests per measurement (p50s)")] = 20,
         max_tokens: Annotated[int, typer.Option(help="max_tokens of the short requests")] = 8,
         story_tokens: Annotated[int, typer.Option(help="max_tokens of the decode-speed replies")] = 64) -> None:
    args = Options(model, iterations, max_tokens, story_tokens)
    load_before, started = os.getloadavg()[0], time.monotonic()
    runs: dict[str, EngineRun] = {}
    print("transformers engine", file=sys.stderr, flush=True)
    with servers(args.model, "transformers", gateway=False) as (grpc_address, _):
        runs["transformers"] = asyncio.run(grpc_engine(args, grpc_address))
    print("llamacpp engine + gateway", file=sys.stderr, flush=True)
    with servers(args.model, "llamacpp") as (grpc_address, base_url):
        runs["llamacpp"] = asyncio.run(grpc_engine(args, grpc_address))
        gateway = asyncio.run(gateway_vs_direct(args, grpc_address, base_url))
    print(RAW, file=sys.stderr, flush=True)
    with raw_llama_server(args.model) as (url, prompt_ids):
        runs[RAW] = asyncio.run(raw_engine(args, url, prompt_ids))
    print_engines(args, runs)
    print_gateway(args, gateway)
    # Anything else on the cores slows every row (llama.cpp's spinning threads most): say how busy they were.
    print(f"\n{os.cpu_count()} cores, 1-min load average {load_before:.2f} at start, "
          f"{os.getloadavg()[0]:.2f} at end; {time.monotonic() - started:.0f} s in all")


if __name__ == "__main__":
    app()
