"""The committed gRPC stubs in emotune/v1 must be exactly what the .proto files generate."""

from __future__ import annotations

import difflib
from pathlib import Path

from emotune.grpc.protogen import generate

REPO = Path(__file__).resolve().parents[3]


def test_committed_stubs_match_the_protos(tmp_path):
    generated = generate(REPO / "proto", tmp_path)
    assert generated, "no .proto files found under proto/"
    fresh = {p.relative_to(tmp_path).as_posix(): p.read_text() for p in generated}
    committed_dir = REPO / "emotune" / "v1"
    committed = {
        p.relative_to(REPO).as_posix(): p.read_text()
        for p in committed_dir.iterdir() if p.suffix in {".py", ".pyi"}
    }
    problems = [f"missing: {name}" for name in sorted(fresh.keys() - committed.keys())]
    problems += [f"stale (no .proto generates it): {name}" for name in sorted(committed.keys() - fresh.keys())]
    for name in sorted(fresh.keys() & committed.keys()):
        if fresh[name] != committed[name]:
            diff = difflib.unified_diff(committed[name].splitlines(), fresh[name].splitlines(), "committed",
                                        "generated", lineterm="", n=1)
            problems.append(f"out of date: {name}\n" + "\n".join(list(diff)[:20]))
    assert not problems, "gRPC stubs differ from proto/: run scripts/gen-protos.sh and commit emotune/v1\n" + \
        "\n".join(problems)
