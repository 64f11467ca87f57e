"""Peak memory of importing a big LCCC-shaped corpus: ``json.load`` of the whole file vs emotune's importer.

LCCC as published is a JSON list of millions of word-segmented dialogues. Loading such a file whole costs many
times its size (every dialogue becomes Python lists and strings at once); emotune's importer reads it through a
window, one dialogue at a time (``emotune.data.textio.TextWindow``), and keeps at most EMOTUNE_IMPORT_MAX_QUESTIONS
questions and as many dialogues. Each measurement runs in its own Python process and reports that process's peak
RSS (``VmHWM``; ``ru_maxrss`` would also count the parent's memory copied at fork), on the same generated file:

1. baseline: ``json.load`` of the whole file (what reading it whole costs before any question is taken);
2. emotune: ``import_questions`` of the same file (its openings are all different: it stops at the question cap);
3. emotune, whole file: a file of the same size whose openings repeat (20,000 distinct), so every one of its
   dialogues is read while what is kept stays under the cap.

    python -m benchmarks.import_memory [--dialogues 600000]
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import typer

ROOT = Path(__file__).resolve().parents[1]
CHARS = "的一是在不了有和人这中大为上个我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学"


def write_lccc(path: Path, dialogues: int, openings: int | None, seed: int = 0) -> None:
    """A JSON list of word-segmented dialogues of 2-3 utterances (``openings``: how many distinct first
    utterances, None for all random)."""
    rnd = random.Random(seed)

    def utterance() -> str:
        return " ".join(rnd.choice(CHARS) for _ in range(rnd.randint(3, 8)))

    unique: dict[str, None] = {}
    while openings and len(unique) < openings:
        unique[utterance()] = None
    firsts = list(unique)
    with path.open("w", encoding="utf-8") as out:
        out.write("[")
        for i in range(dialogues):
            first = firsts[i % len(firsts)] if firsts else utterance()
            turns = [first] + [utterance() for _ in range(rnd.choice((1, 1, 2)))]
            out.write(("," if i else "") + "\n" + json.dumps(turns, ensure_ascii=False))
        out.write("\n]\n")


def peak_mb(code: str) -> tuple[float, float, dict]:
    """Run ``code`` in a fresh interpreter; (peak RSS in MB, seconds, what it printed as JSON)."""
    child = textwrap.dedent(code) + textwrap.dedent("""
        import json as _json
        _peak = int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))
        print(_json.dumps({"peak_kb": _peak, **out}))
    """)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", child], cwd=ROOT, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result.pop("peak_kb") / 1024, time.perf_counter() - started, result


app = typer.Typer(add_completion=False)


@app.command(help=__doc__)
def main(dialogues: int = 600_000) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        corpus, repeating = Path(tmp) / "lccc.json", Path(tmp) / "lccc-repeating.json"
        write_lccc(corpus, dialogues, None)
        write_lccc(repeating, dialogues, 20_000)
        size = corpus.stat().st_size / 1e6
        print(f"LCCC-shaped corpus: {dialogues} dialogues, {size:.1f} MB")
        interpreter, _, _ = peak_mb("import emotune.data.importers\nout = {}")
        load, load_s, _ = peak_mb(f"""
            import json
            with open({str(corpus)!r}, encoding="utf-8") as f:
                out = {{"dialogues": len(json.load(f))}}
        """)
        importer = """
            from emotune.data.importers import import_questions
            r = import_questions({path!r})
            out = {{"read": r.report.read, "questions": len(r.questions), "dialogues": len(r.dialogues)}}
        """
        capped, capped_s, capped_out = peak_mb(importer.format(path=str(corpus)))
        whole, whole_s, whole_out = peak_mb(importer.format(path=str(repeating)))
    print(f"python + emotune.data.importers alone: {interpreter:6.0f} MB")
    print(f"{'':44} {'peak RSS':>9} {'x file':>7} {'time':>7}")
    rows = [
        ("baseline: json.load of the whole file", load, load_s, f"{dialogues} dialogues in memory"),
        ("emotune import_questions", capped, capped_s,
         f"read {capped_out['read']}, kept {capped_out['questions']} questions (the cap)"),
        ("emotune import_questions, whole file read", whole, whole_s,
         f"read {whole_out['read']}, kept {whole_out['questions']} questions, {whole_out['dialogues']} dialogues"),
    ]
    for name, mb, seconds, note in rows:
        print(f"{name:44} {mb:6.0f} MB {mb / size:6.1f}x {seconds:6.1f}s  {note}")
    print(f"baseline / emotune: {load / capped:.1f}x less memory (whole file read: {load / whole:.1f}x)")


if __name__ == "__main__":
    app()
