"""The vllm engine. Here (no GPU, no vLLM): the command line, the request body, vLLM's stream events, the
template vLLM renders, the adapter check before start-up, and the whole engine against a stand-in ``vllm``
executable speaking vLLM's OpenAI protocol. With CUDA and vLLM: real serving of SmolLM2 and two adapters."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import jinja2
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from emotune.errors import FailedPrecondition, InvalidInput, Unavailable
from emotune.models.chat_template import ChatFormat
from emotune.services.inference.config import InferenceSettings
from emotune.services.inference.engines import create_engine
from emotune.services.inference.engines.base import ChatParams, ModelSource, PreparedChat
from emotune.services.inference.engines.vllm_gpu import (
    CompletionStream,
    LoraModule,
    VllmEngine,
    completion_body,
    serve_command,
)

CONVERSATION = [
    {"role": "system", "content": "你是一个温柔体贴的聊天伙伴。"},
    {"role": "user", "content": "今天好累呀"},
    {"role": "assistant", "content": "抱抱你~ 发生什么事了？"},
    {"role": "user", "content": "加班到十点，饭都没吃。"},
]

# A stand-in for `vllm serve`: records its argv and every request, answers /health and streams /v1/completions
# the way vLLM's OpenAI server does (text deltas, a finish_reason, a usage chunk, [DONE]), as raw UTF-8 JSON:
# a U+2028 in a token reaches the stream unescaped (the reply below carries one).
FAKE_VLLM = r'''
import json, os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

args = sys.argv[1:]
assert args[0] == "serve", args
port = int(args[args.index("--port") + 1])
record = os.environ["FAKE_VLLM_RECORD"]
with open(os.path.join(record, f"argv-{port}.json"), "w") as f:
    json.dump(args, f)
names = {args[args.index("--served-model-name") + 1]}
if "--lora-modules" in args:
    for item in args[args.index("--lora-modules") + 1:]:
        if item.startswith("--"):
            break
        names.add(item.split("=", 1)[0])


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def event(self, payload):
        self.wfile.write(b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n")
        self.wfile.flush()

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with open(os.path.join(record, "requests.jsonl"), "a") as f:
            f.write(json.dumps(body) + "\n")
        if body["model"] not in names:
            self.send_response(404)
            self.end_headers()
            self.wfile.write(json.dumps({"object": "error", "message": "model not found"}).encode())
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        words = ["Hello", " from\u2028 ", body["model"]] if body["max_tokens"] < 100 else ["word "] * 2000
        n = len(body["prompt"])
        try:
            for i, word in enumerate(words[: body["max_tokens"]]):
                last = i + 1 == min(len(words), body["max_tokens"])
                finish = ("length" if body["max_tokens"] <= len(words) else "stop") if last else None
                usage = {"prompt_tokens": n, "completion_tokens": i + 1, "total_tokens": n + i + 1}
                self.event({"id": "cmpl-1", "object": "text_completion", "model": body["model"], "usage": usage,
                            "choices": [{"index": 0, "text": word, "logprobs": None, "finish_reason": finish,
                                         "stop_reason": None}]})
                if len(words) > 100:
                    time.sleep(0.02)
            self.event({"id": "cmpl-1", "object": "text_completion", "model": body["model"], "choices": [],
                        "usage": usage})
            self.wfile.write(b"data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError):
            with open(os.path.join(record, "aborted"), "a") as f:
                f.write(body["model"] + "\n")


ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
'''


def write_adapter_config(directory: Path, r: int, **values) -> Path:
    """An adapter as far as the engine reads it (the stand-in server never loads weights)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": r, "target_modules": ["q_proj", "v_proj"], "bias": "none", **values}))
    return directory


@pytest.fixture
def fake_vllm(tmp_path, monkeypatch) -> Path:
    """A ``vllm`` executable on PATH (the stand-in); returns the folder it records into."""
    bin_dir, record = tmp_path / "bin", tmp_path / "record"
    bin_dir.mkdir()
    record.mkdir()
    script = bin_dir / "vllm"
    script.write_text(f"#!{sys.executable}\n{FAKE_VLLM}", encoding="utf-8")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_VLLM_RECORD", str(record))
    return record


def test_the_engine_module_never_imports_vllm():
    if importlib.util.find_spec("vllm") is None:
        assert shutil.which("vllm") is None  # the CPU environment: vLLM lives in its own image
    code = ("import sys; import emotune.services.inference.engines.vllm_gpu as m; "
            "assert 'vllm' not in sys.modules; print(m.VllmEngine.name)")
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[4])
    assert done.returncode == 0 and done.stdout.strip() == "vllm", done.stderr
    assert isinstance(create_engine("vllm", InferenceSettings()), VllmEngine)


def test_load_without_the_vllm_executable_fails_naming_it(smollm_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH, wherever the test runs
    with pytest.raises(FailedPrecondition, match="`vllm` executable"):
        VllmEngine(InferenceSettings(cache_dir=tmp_path)).load(ModelSource(smollm_dir))


def test_serve_command_has_the_exact_flags(tmp_path):
    settings = InferenceSettings(inference_max_concurrency=4, inference_vllm_extra_args="--enforce-eager --dtype half")
    adapters = [LoraModule("adapter-1", Path("/m/a1"), 8), LoraModule("adapter-2", Path("/m/a2"), 12)]
    assert serve_command("vllm", Path("/m/base"), adapters, Path("/t/chat.jinja"), 8123, settings) == [
        "vllm", "serve", "/m/base", "--host", "127.0.0.1", "--port", "8123", "--served-model-name", "base",
        "--chat-template", "/t/chat.jinja", "--gpu-memory-utilization", "0.45", "--max-num-seqs", "4",
        "--enable-lora", "--max-loras", "2", "--max-lora-rank", "16",
        "--lora-modules", "adapter-1=/m/a1", "adapter-2=/m/a2", "--enforce-eager", "--dtype", "half"]
    plain = InferenceSettings(inference_vllm_max_model_len=2048, inference_vllm_gpu_memory_utilization=0.8)
    assert serve_command("vllm", Path("/m/base"), [], Path("/t/c.jinja"), 9000, plain) == [
        "vllm", "serve", "/m/base", "--host", "127.0.0.1", "--port", "9000", "--served-model-name", "base",
        "--chat-template", "/t/c.jinja", "--gpu-memory-utilization", "0.8", "--max-num-seqs", "2",
        "--max-model-len", "2048"]
    ranks = [serve_command("v", Path("/b"), [LoraModule("a", Path("/a"), r)], Path("/t"), 1, plain)
             for r in (4, 64, 300)]
    assert [args[args.index("--max-lora-rank") + 1] for args in ranks] == ["8", "64", "320"]


def test_request_body():
    chat = PreparedChat(CONVERSATION, ChatParams(max_tokens=32, temperature=0, stop=("\n\n",), seed=7), (1, 2, 3))
    assert completion_body("adapter-1", chat, {"temperature": 0.7, "top_p": 0.9}, (2, 7)) == {
        "model": "adapter-1", "prompt": [1, 2, 3], "max_tokens": 32, "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        "temperature": 0, "top_p": 0.9, "top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0,
        "stop": ["\n\n"], "stop_token_ids": [2, 7], "include_stop_str_in_output": False,
        "skip_special_tokens": True, "seed": 7}
    defaults = completion_body("base", PreparedChat([], ChatParams(max_tokens=5), (9,)), {
        "temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.05}, ())
    assert (defaults["temperature"], defaults["top_p"], defaults["repetition_penalty"], "seed" in defaults) == \
        (0.7, 0.9, 1.05, False)


def _event(text: str | None = None, finish: str | None = None, usage: dict | None = None) -> str:
    choices = [] if text is None else [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish,
                                        "stop_reason": None}]
    return json.dumps({"id": "cmpl-x", "object": "text_completion", "created": 1, "model": "a",
                       "choices": choices, "usage": usage})


def test_sse_chunks_become_emotune_chunks():
    stream = CompletionStream(prompt_tokens=11)
    events = [_event("你"), "", _event("好", usage={"prompt_tokens": 12, "completion_tokens": 2}),
              _event("", "stop"), _event(usage={"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}),
              "[DONE]"]
    texts = [chunk.text for data in events for chunk in stream.feed(data)]
    assert texts == ["你", "好"] and stream.done
    final = stream.final()
    assert (final.text, final.finish_reason, final.prompt_tokens, final.completion_tokens) == ("", "stop", 12, 3)

    for reason, expected in (("length", "length"), ("abort", "cancelled"), ("stop", "stop")):
        stream = CompletionStream(prompt_tokens=4)
        assert [c.text for c in stream.feed(_event("x", reason))] == ["x"]
        assert stream.final().finish_reason == expected and stream.final().prompt_tokens == 4

    for error in ({"error": {"message": "boom", "type": "InternalServerError", "code": 500}},
                  {"object": "error", "message": "boom", "type": "BadRequestError", "code": 400}):
        with pytest.raises(Unavailable, match="boom"):
            CompletionStream().feed(json.dumps(error))


def test_the_exported_template_renders_in_vllm_exactly_as_training(smollm_dir):
    """vLLM renders ``--chat-template`` with transformers' Jinja environment; it must give the trainer's text."""
    fmt = ChatFormat.from_pretrained(smollm_dir)
    assert fmt.normalize(CONVERSATION) == CONVERSATION  # what vLLM would be sent is what emotune renders
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = lambda value, **kw: json.dumps(value, ensure_ascii=False, **kw)

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env.globals["raise_exception"] = raise_exception
    tokenizer = fmt.tokenizer
    special = {"bos_token": tokenizer.bos_token, "eos_token": tokenizer.eos_token, "pad_token": tokenizer.pad_token,
               "unk_token": tokenizer.unk_token}
    for history in (CONVERSATION[:2], CONVERSATION):
        for gen in (True, False):
            rendered = env.from_string(fmt.template).render(messages=history, add_generation_prompt=gen, **special)
            reference = tokenizer.apply_chat_template(history, chat_template=fmt.template, tokenize=False,
                                                      add_generation_prompt=gen)
            assert rendered == reference == fmt.render(history, add_generation_prompt=gen), (history, gen)
        # and the ids the engine sends as `prompt` are the tokenized generation prompt, no special tokens added
        prompt = env.from_string(fmt.template).render(messages=history, add_generation_prompt=True, **special)
        assert tokenizer(prompt, add_special_tokens=False)["input_ids"] == fmt.prompt_ids(history)


def test_load_refuses_an_unservable_adapter_before_starting_anything(smollm_dir, fake_vllm, tmp_path):
    engine = VllmEngine(InferenceSettings(cache_dir=tmp_path))
    big = write_adapter_config(tmp_path / "r64", 64)
    with pytest.raises(FailedPrecondition, match="set EMOTUNE_INFERENCE_VLLM_MAX_LORA_RANK=64 or train with "
                                                 "lora.r <= 16"):
        engine.load(ModelSource(smollm_dir, big))
    head = write_adapter_config(tmp_path / "head", 8, modules_to_save=["lm_head"])
    with pytest.raises(InvalidInput, match="lm_head"):
        engine.load(ModelSource(smollm_dir, head))
    assert not list(fake_vllm.glob("argv-*.json"))  # no server was started
    engine.shutdown()


async def _reply(model, messages, params):
    finished = threading.Event()
    chunks = [chunk async for chunk in model.start(model.prepare(messages, params), finished.set)]
    assert await asyncio.to_thread(finished.wait, 10)
    return "".join(c.text for c in chunks), chunks[-1]


async def test_engine_serves_base_and_adapters_through_one_process(smollm_dir, fake_vllm, tmp_path):
    engine = VllmEngine(InferenceSettings(cache_dir=tmp_path / "cache"))
    first, second = write_adapter_config(tmp_path / "a1", 8), write_adapter_config(tmp_path / "a2", 16)
    try:
        base = await asyncio.to_thread(engine.load, ModelSource(smollm_dir))
        one = await asyncio.to_thread(engine.load, ModelSource(smollm_dir, first))
        two = await asyncio.to_thread(engine.load, ModelSource(smollm_dir, second))
        argvs = [json.loads(p.read_text()) for p in sorted(fake_vllm.glob("argv-*.json"), key=os.path.getmtime)]
        assert len(argvs) == 3 and "--enable-lora" not in argvs[0]
        last = argvs[-1]
        assert last[last.index("--lora-modules") + 1:last.index("--lora-modules") + 3] == [
            f"adapter-1={first.resolve()}", f"adapter-2={second.resolve()}"]
        assert last[last.index("--max-loras") + 1] == "2" and last[last.index("--max-lora-rank") + 1] == "16"
        template = Path(last[last.index("--chat-template") + 1])
        assert template.read_text(encoding="utf-8") == base.chat_format.template
        assert len(engine.servers()) == 1 and base.base.server is two.base.server  # one process per base

        assert (base.request_model, one.request_model, two.request_model) == ("base", "adapter-1", "adapter-2")
        text, final = await _reply(two, CONVERSATION, ChatParams(max_tokens=32, temperature=0))
        assert text == "Hello from\u2028 adapter-2" and final.finish_reason == "stop" and final.completion_tokens == 3
        sent = json.loads((fake_vllm / "requests.jsonl").read_text().splitlines()[-1])
        assert sent["model"] == "adapter-2" and sent["prompt"] == two.chat_format.prompt_ids(CONVERSATION)
        assert final.prompt_tokens == len(sent["prompt"]) and sent["stop_token_ids"] == list(two.eos_token_ids)
        text, final = await _reply(base, CONVERSATION[:2], ChatParams(max_tokens=2))
        assert text == "Hello from\u2028 " and final.finish_reason == "length"

        cancelled = threading.Event()
        generation = two.start(two.prepare(CONVERSATION, ChatParams(max_tokens=500)), cancelled.set)
        chunks = []
        async for chunk in generation:
            chunks.append(chunk)
            if len(chunks) == 1:
                generation.cancel()
        assert chunks[-1].finish_reason == "cancelled" and len(chunks) < 100
        assert await asyncio.to_thread(cancelled.wait, 10)

        server = two.base.server
        for model in (base, one, two):
            model.close()
        assert engine.servers() == [] and server.process.wait(timeout=30) is not None
    finally:
        engine.shutdown()


cuda = pytest.mark.skipif(not __import__("torch").cuda.is_available() or shutil.which("vllm") is None,
                          reason="needs CUDA and the vllm executable (vLLM's own image)")


@pytest.mark.gpu
@cuda
async def test_vllm_serves_smollm_and_two_adapters_on_gpu(smollm_dir, tmp_path):
    from tests.emotune.services.inference.test_inference_llamacpp import _random_adapter

    adapters = [_random_adapter(smollm_dir, tmp_path / f"style-{seed}", seed) for seed in (1, 2)]
    engine = VllmEngine(InferenceSettings(cache_dir=tmp_path, inference_vllm_max_model_len=2048,
                                          inference_vllm_gpu_memory_utilization=0.3,
                                          inference_vllm_extra_args="--enforce-eager"))
    try:
        base = await asyncio.to_thread(engine.load, ModelSource(smollm_dir))
        styled = [await asyncio.to_thread(engine.load, ModelSource(smollm_dir, a)) for a in adapters]
        question = [{"role": "user", "content": "What is the capital of France?"}]
        text, final = await _reply(base, question, ChatParams(max_tokens=32, temperature=0))
        assert "Paris" in text and final.finish_reason == "stop" and final.completion_tokens > 0
        replies = []
        for model in styled:
            text, final = await _reply(model, question, ChatParams(max_tokens=16, temperature=0))
            assert final.finish_reason in ("stop", "length") and final.completion_tokens > 0
            replies.append(text)
        assert replies[0] != replies[1]  # each request ran its own adapter

        cancelled = threading.Event()
        generation = base.start(base.prepare([{"role": "user", "content": "Tell me a long story."}],
                                             ChatParams(max_tokens=500, temperature=0)), cancelled.set)
        async for chunk in generation:
            generation.cancel()
            break
        assert await asyncio.to_thread(cancelled.wait, 10)
        for model in (base, *styled):
            model.close()
    finally:
        engine.shutdown()
