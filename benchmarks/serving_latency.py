"""Serving latency: the gateway (HTTP, OpenAI API) vs the same call straight to the inference gRPC service.

Both servers run as their own processes on loopback (``python -m services.inference`` / ``python -m
services.gateway``), exactly as deployed; this process is only the client. Requests alternate between the two
paths (so load on the machine hits both alike) and use greedy decoding, so both produce the same tokens.

- p50 latency of a short non-streamed completion: gateway / direct (target <= 1.05)
- streaming time to first token: gateway minus direct, p50 (target <= 10 ms)
- CPU tokens/s of the transformers engine (decode speed of one stream) on the model served (Gemma 3 270M)

    python -m benchmarks.serving_latency [--model gemma3-270m] [--iterations 20] [--max-tokens 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import grpc
import httpx

from emotune.grpc.probe import check
from emotune.local.supervisor import free_port
from emotune.v1 import inference_pb2, inference_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "sk-benchmark-serving-latency"
PROMPT = "用一句话安慰一个加班到深夜的朋友。"
STORY = "给我讲一个关于一只勇敢小猫的长故事。"


@contextmanager
def servers(model: str):
    grpc_port, metrics_port, http_port = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "EMOTUNE_INFERENCE_ADDR": f"127.0.0.1:{grpc_port}", "EMOTUNE_METRICS_PORT": str(metrics_port),
               "EMOTUNE_INFERENCE_PRELOAD": model, "EMOTUNE_INFERENCE_MAX_CONCURRENCY": "1",
               "EMOTUNE_STORE_PATH": tmp, "EMOTUNE_GATEWAY_PORT": str(http_port), "EMOTUNE_GATEWAY_API_KEYS": API_KEY,
               "EMOTUNE_LOG_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1"}
        procs = [subprocess.Popen([sys.executable, "-m", f"services.{name}"], cwd=ROOT, env=env)
                 for name in ("inference", "gateway")]
        try:
            deadline = time.monotonic() + 600
            while not check(f"127.0.0.1:{grpc_port}", timeout=1.0):
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    raise RuntimeError("the services did not start")
                time.sleep(0.5)
            yield f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{http_port}"
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(30)


def grpc_request(model: str, content: str, max_tokens: int, whole_reply: bool = False) -> inference_pb2.ChatRequest:
    return inference_pb2.ChatRequest(
        model=model, messages=[inference_pb2.ChatMessage(role="user", content=content)],
        sampling=inference_pb2.SamplingParams(max_tokens=max_tokens, temperature=0), whole_reply=whole_reply)


def http_body(model: str, max_tokens: int, stream: bool) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens,
            "temperature": 0, "stream": stream}


async def direct_complete(stub, model: str, max_tokens: int) -> tuple[float, str]:
    """(seconds, text) of the call the gateway makes for a non-streamed completion, straight to gRPC."""
    started = time.perf_counter()
    parts = [chunk.text async for chunk in stub.Chat(grpc_request(model, PROMPT, max_tokens, whole_reply=True))]
    return time.perf_counter() - started, "".join(parts)


async def direct_ttft(stub, model: str, max_tokens: int) -> float:
    """Reads the whole stream, as the gateway client does: the next request must not queue behind this one."""
    started, first = time.perf_counter(), None
    async for chunk in stub.Chat(grpc_request(model, PROMPT, max_tokens)):
        if chunk.text and first is None:
            first = time.perf_counter() - started
    return first or 0.0


async def gateway_complete(http: httpx.AsyncClient, model: str, max_tokens: int) -> tuple[float, str]:
    started = time.perf_counter()
    response = await http.post("/v1/chat/completions", json=http_body(model, max_tokens, False))
    response.raise_for_status()
    return time.perf_counter() - started, response.json()["choices"][0]["message"]["content"]


async def gateway_ttft(http: httpx.AsyncClient, model: str, max_tokens: int) -> float:
    started, first = time.perf_counter(), None
    async with http.stream("POST", "/v1/chat/completions", json=http_body(model, max_tokens, True)) as response:
        async for line in response.aiter_lines():
            if first is None and line.startswith("data: {"):
                choices = json.loads(line[6:])["choices"]
                if choices and choices[0]["delta"].get("content"):
                    first = time.perf_counter() - started
    return first or 0.0


async def run(args: argparse.Namespace, grpc_address: str, base_url: str) -> None:
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

        direct_total, gateway_total, direct_first, gateway_first = [], [], [], []
        for iteration in range(args.iterations):
            print(f"iteration {iteration + 1}/{args.iterations}", file=sys.stderr, flush=True)
            total, text = await direct_complete(stub, model, max_tokens)
            via_gateway, gateway_text = await gateway_complete(http, model, max_tokens)
            assert gateway_text == text, "both paths must generate the same tokens"
            direct_total.append(total)
            gateway_total.append(via_gateway)
            direct_first.append(await direct_ttft(stub, model, max_tokens))
            gateway_first.append(await gateway_ttft(http, model, max_tokens))

        speeds = []
        for _ in range(3):
            first, tokens = None, 0
            async for chunk in stub.Chat(grpc_request(model, STORY, args.story_tokens)):
                if chunk.text and first is None:
                    first = time.perf_counter()
                tokens = chunk.usage.completion_tokens or tokens
            speeds.append((tokens - 1) / (time.perf_counter() - first) if first and tokens > 1 else 0.0)

    p50 = statistics.median
    latency_ratio = p50(gateway_total) / p50(direct_total)
    ttft_overhead_ms = (p50(gateway_first) - p50(direct_first)) * 1000
    print(f"\nserving latency, model {model}, {args.iterations} interleaved requests, max_tokens={max_tokens}")
    print(f"{'':34} {'direct gRPC':>12} {'gateway':>12} {'ratio/diff':>12}  target")
    print(f"{'p50 non-streamed completion (ms)':34} {p50(direct_total) * 1000:12.1f} "
          f"{p50(gateway_total) * 1000:12.1f} {latency_ratio:12.3f}x  <= 1.05x")
    print(f"{'p50 streaming time to first token':34} {p50(direct_first) * 1000:12.1f} "
          f"{p50(gateway_first) * 1000:12.1f} {ttft_overhead_ms:+11.1f}ms  <= +10 ms")
    print(f"{'CPU decode tokens/s (1 stream)':34} {p50(speeds):12.1f} {'':>12} {'':>12}  "
          f"(median of 3 x {args.story_tokens} tokens)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--story-tokens", type=int, default=48)
    args = parser.parse_args()
    with servers(args.model) as (grpc_address, base_url):
        asyncio.run(run(args, grpc_address, base_url))


if __name__ == "__main__":
    main()
