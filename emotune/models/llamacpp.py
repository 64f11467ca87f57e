"""llama.cpp's tools and GGUF conversions, shared by the inference engine and the trainer's GGUF export.

The tools are built once per machine by ``scripts/llamacpp.sh`` (pinned llama-cpp-python sdist) into
``<cache_dir>/llama.cpp-<version>``: ``bin/llama-server``, ``bin/llama-quantize``, ``bin/llama-export-lora``, the
``convert_*.py`` scripts and their ``gguf-py``. Conversions are cached by the content of what they convert, so a
model or adapter is converted once however often it is loaded.

- A base model's GGUF: the packaged GGUF itself (its vocabulary is the one the model was trained with), else
  ``convert_hf_to_gguf.py`` of the HF directory.
- A PEFT LoRA adapter becomes a GGUF adapter with ``convert_lora_to_gguf.py`` (it needs the base's config only).
- An export merges adapter into base with ``llama-export-lora``, quantizes with ``llama-quantize`` and writes
  emotune's chat template and end-of-turn token into the metadata (``gguf_new_metadata.py``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from emotune.errors import CorruptArtifact, DeadlineExceeded, FailedPrecondition, InvalidInput
from emotune.logging import get_logger
from emotune.models.server_process import LocalServer

log = get_logger(__name__)

VERSION = "0.3.36"  # the llama-cpp-python sdist scripts/llamacpp.sh builds from
QUANT_TYPES = ("Q4_K_M", "Q5_K_M", "Q8_0", "F16")
DEFAULT_QUANT = "Q4_K_M"
CONVERSION_VERSION = "1"  # part of every cache key: bump when a conversion's command changes


@dataclass(frozen=True)
class LlamaCpp:
    root: Path
    timeout_seconds: float = 3600.0  # one tool run; EMOTUNE_LLAMACPP_TOOL_TIMEOUT_SECONDS

    @classmethod
    def locate(cls, cache_dir: Path, explicit: Path | None = None, timeout_seconds: float | None = None) -> LlamaCpp:
        """The built tools; each run is stopped after ``timeout_seconds`` (default: the setting)."""
        if timeout_seconds is None:
            from emotune.settings import Settings

            timeout_seconds = Settings().llamacpp_tool_timeout_seconds
        root = explicit or Path(cache_dir) / f"llama.cpp-{VERSION}"
        tools = cls(Path(root), timeout_seconds)
        missing = [p.name for p in (tools.server, tools.quantize, tools.export_lora) if not os.access(p, os.X_OK)]
        if missing:
            raise FailedPrecondition(f"llama.cpp is not built in {root} (missing {', '.join(missing)}); run "
                                     "scripts/llamacpp.sh (once per machine, ~10 min on 2 cores)")
        return tools

    @property
    def server(self) -> Path:
        return self.root / "bin" / "llama-server"

    @property
    def quantize(self) -> Path:
        return self.root / "bin" / "llama-quantize"

    @property
    def export_lora(self) -> Path:
        return self.root / "bin" / "llama-export-lora"

    def _run(self, what: str, args: list[str | Path]) -> None:
        """Run one tool; a failure names what was being done and ends with the tool's last output lines; a tool
        still running after ``timeout_seconds`` is killed."""
        env = {**os.environ, "PYTHONPATH": str(self.root / "gguf-py")}
        try:
            done = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, check=False,
                                  timeout=self.timeout_seconds)
        except subprocess.TimeoutExpired:
            raise DeadlineExceeded(f"{what} did not finish within {self.timeout_seconds:g} s and was stopped "
                                   "(EMOTUNE_LLAMACPP_TOOL_TIMEOUT_SECONDS)") from None
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
            raise CorruptArtifact(f"{what} failed (exit {done.returncode}): {tail}")

    def _script(self, name: str) -> list[str | Path]:
        return [sys.executable, self.root / name]

    def convert_model(self, hf_dir: Path, out: Path, outtype: str = "f16") -> Path:
        self._run(f"converting {hf_dir} to GGUF",
                  [*self._script("convert_hf_to_gguf.py"), hf_dir, "--outfile", out, "--outtype", outtype])
        return out

    def convert_adapter(self, adapter_dir: Path, base_dir: Path, out: Path) -> Path:
        if not (adapter_dir / "adapter_config.json").is_file():
            raise CorruptArtifact(f"{adapter_dir} has no adapter_config.json: not a PEFT LoRA adapter")
        self._run(f"converting the LoRA adapter {adapter_dir} to GGUF",
                  [*self._script("convert_lora_to_gguf.py"), adapter_dir, "--base", base_dir, "--outfile", out,
                   "--outtype", "f16"])
        return out

    def merge(self, base_gguf: Path, adapter_gguf: Path, out: Path) -> Path:
        self._run("merging the adapter into the base GGUF",
                  [self.export_lora, "-m", base_gguf, "--lora", adapter_gguf, "-o", out])
        return out

    def quantize_model(self, src: Path, out: Path, quant: str) -> Path:
        if quant not in QUANT_TYPES:
            raise InvalidInput(f"unknown GGUF quantization {quant!r}; choose one of {', '.join(QUANT_TYPES)}",
                               field="gguf_quantization")
        # A merged base keeps its quantized tensors (e.g. a Q4_K_M package): those are re-quantized.
        self._run(f"quantizing to {quant}", [self.quantize, "--allow-requantize", src, out, quant])
        return out

    def with_chat_metadata(self, src: Path, out: Path, template: str, end_token_id: int, name: str) -> Path:
        """A copy of ``src`` whose metadata carries emotune's template and ends turns with its end token."""
        with tempfile.TemporaryDirectory() as tmp:
            template_file = Path(tmp) / "chat_template.jinja"
            template_file.write_text(template, encoding="utf-8")
            self._run("writing the chat template into the GGUF", [
                sys.executable, self.root / "gguf-py" / "gguf" / "scripts" / "gguf_new_metadata.py", src, out,
                "--chat-template-file", template_file, "--special-token-by-id", "eos", str(end_token_id),
                "--special-token-by-id", "eot", str(end_token_id), "--general-name", name, "--force"])
        return out


def content_key(*paths: Path) -> str:
    """A short digest of files' names and bytes (folders: every file inside), for conversion caches."""
    digest = hashlib.sha256(CONVERSION_VERSION.encode())
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            digest.update(file.name.encode())
            with file.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:20]


def cached(target: Path, build: Callable[[Path], object]) -> Path:
    """``target`` if it exists, else ``build(tmp)`` written beside it and renamed (never a half file)."""
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        build(tmp)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def base_gguf(tools: LlamaCpp, cache_dir: Path, model_dir: Path, shipped: Path | None = None) -> Path:
    """The base's own GGUF when it ships as one (packaged models); else its HF directory converted once (f16)."""
    if shipped is not None:
        return shipped
    target = Path(cache_dir) / "gguf" / "models" / f"{content_key(model_dir)}-f16.gguf"
    return cached(target, lambda tmp: tools.convert_model(model_dir, tmp))


def adapter_cache_path(cache_dir: Path, adapter_dir: Path) -> Path:
    """Where a PEFT adapter's GGUF conversion is cached (keyed by its config and weights)."""
    weights = [adapter_dir / name for name in ("adapter_config.json", "adapter_model.safetensors")]
    key = content_key(*weights) if all(p.is_file() for p in weights) else content_key(adapter_dir)
    return Path(cache_dir) / "gguf" / "adapters" / f"{key}.gguf"


def adapter_gguf(tools: LlamaCpp, cache_dir: Path, adapter_dir: Path, base_dir: Path) -> Path:
    """A PEFT LoRA adapter as a GGUF adapter, converted once."""
    return cached(adapter_cache_path(cache_dir, adapter_dir),
                  lambda tmp: tools.convert_adapter(adapter_dir, base_dir, tmp))


def gguf_metadata(path: Path) -> dict[str, object]:
    """The scalar and string metadata of a GGUF file (arrays such as the vocabulary are left out)."""
    from gguf import GGUFReader, GGUFValueType

    reader = GGUFReader(str(path))
    values: dict[str, object] = {}
    for key, field in reader.fields.items():
        if not field.types or field.types[0] == GGUFValueType.ARRAY:
            continue
        part = field.parts[field.data[0]]
        values[key] = bytes(part).decode("utf-8") if field.types[0] == GGUFValueType.STRING else part.tolist()[0]
    return values


def repack_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """``["--no-repack"]`` where llama-server must not repack weights for this CPU (its default). On CPUs that
    report AMX, repacking
    routes matrix products through ggml's AMX kernels, which crash with SIGSEGV at the first decode in VMs that
    do not grant the AMX tile state (seen on 2026-12-06: every llama-server died loading Qwen-0.5B). There the
    servers run with ``--no-repack`` (the AVX-512 kernels, same decode rate); ``LLAMA_ARG_REPACK`` in the
    environment, llama.cpp's own switch, overrides the choice."""
    if os.environ.get("LLAMA_ARG_REPACK") is not None:
        return []  # llama-server reads the operator's choice itself
    try:
        flags = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return ["--no-repack"] if "amx_tile" in flags else []


class LlamaServer(LocalServer):
    """One ``llama-server`` process on loopback (see :class:`emotune.models.server_process.LocalServer`).

    ``template`` is passed as ``--chat-template-file`` (None: the GGUF's own, e.g. to check an export).
    Call :meth:`wait_ready` after construction (or use it as a context manager), :meth:`stop` at the end.
    """

    program = "llama-server"

    def __init__(self, tools: LlamaCpp, model: Path, work_dir: Path, adapters: list[Path] | tuple = (),
                 template: str | None = None, slots: int = 1, slot_context: int = 4096, threads: int = 0) -> None:
        super().__init__(model, adapters)
        work_dir.mkdir(parents=True, exist_ok=True)
        threads = threads or os.cpu_count() or 1
        args = [str(tools.server), "--model", str(model), "--host", "127.0.0.1", "--port", str(self.port),
                "--parallel", str(slots), "--ctx-size", str(slot_context * slots), "--threads", str(threads),
                "--threads-batch", str(threads), "--jinja", "--no-webui", "--metrics"]
        args += repack_flags()
        if template is not None:
            template_file = work_dir / f"chat_template-{self.port}.jinja"
            template_file.write_text(template, encoding="utf-8")
            self._cleanup.append(template_file)
            args += ["--chat-template-file", str(template_file)]
        if self.adapters:
            args.append("--lora-init-without-apply")  # every adapter at scale 0 unless a request selects it
        for adapter in self.adapters:
            args += ["--lora", str(adapter)]
        self.launch(args, work_dir / f"llama-server-{self.port}.log")

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """The generation prompt llama.cpp itself builds, as its chat endpoint does: the template's rendering
        (less a leading BOS text) tokenized with the vocabulary's special tokens (which adds that BOS back)."""
        rendered = httpx.post(f"{self.url}/apply-template", json={"messages": messages}, timeout=30)
        rendered.raise_for_status()
        tokens = httpx.post(f"{self.url}/tokenize", timeout=30, json={
            "content": rendered.json()["prompt"], "add_special": True, "parse_special": True})
        tokens.raise_for_status()
        return list(tokens.json()["tokens"])
