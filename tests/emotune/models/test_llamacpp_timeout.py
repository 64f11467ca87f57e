"""Issue 29, low: a llama.cpp tool that hangs is stopped after EMOTUNE_LLAMACPP_TOOL_TIMEOUT_SECONDS with an error
naming what it was doing; before, a conversion waited on it for ever. Real processes: a built-tools folder whose
``llama-export-lora`` never finishes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from emotune.errors import DeadlineExceeded
from emotune.models.llamacpp import LlamaCpp


def _tools(root: Path, merge_script: str) -> Path:
    (root / "bin").mkdir(parents=True)
    for name in ("llama-server", "llama-quantize", "llama-export-lora"):
        tool = root / "bin" / name
        tool.write_text("#!/bin/sh\n" + (merge_script if name == "llama-export-lora" else "exit 0\n"))
        tool.chmod(0o755)
    return root


def test_a_hanging_tool_is_stopped_with_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMOTUNE_LLAMACPP_TOOL_TIMEOUT_SECONDS", "1")
    tools = LlamaCpp.locate(tmp_path / "cache", _tools(tmp_path / "llama.cpp", "sleep 8\n"))
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as stopped:
        tools.merge(tmp_path / "base.gguf", tmp_path / "adapter.gguf", tmp_path / "merged.gguf")
    assert time.monotonic() - started < 5
    assert stopped.value.message == ("merging the adapter into the base GGUF did not finish within 1 s and was "
                                     "stopped (EMOTUNE_LLAMACPP_TOOL_TIMEOUT_SECONDS)")
    assert LlamaCpp.locate(tmp_path / "cache", tools.root, timeout_seconds=30).timeout_seconds == 30
