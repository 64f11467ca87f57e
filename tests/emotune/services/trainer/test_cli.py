"""``emotune train run``: in-process from a local records file, and against a running trainer service (--remote),
the merged model exported to a folder; bad specs fail with the field named and no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from emotune.cli.main import app
from emotune.models.chat_template import MODELFILE
from emotune.services.trainer.config import TrainerSettings
from emotune.services.trainer.server import add_servicers
from emotune.services.trainer.service import TrainerService
from emotune.store.local import LocalStore
from tests.emotune.services.trainer.conftest import styled_jsonl
from tests.support.grpc_thread import grpc_service_in_thread

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def _train(args: list[str], tmp_path: Path) -> str:
    env = {"EMOTUNE_STORE_PATH": str(tmp_path / "store"), "EMOTUNE_TRAINER_WORK_DIR": str(tmp_path / "work")}
    result = CliRunner().invoke(app, ["train", "run", *args], env=env)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "gentle.jsonl"
    path.write_bytes(styled_jsonl(12))
    return path


def test_run_in_process_exports_the_merged_model(tmp_path: Path, tiny_model_dir: Path, data: Path) -> None:
    out = tmp_path / "export"
    output = _train(["--data", str(data), "--base-model", str(tiny_model_dir), "--max-steps", "2",
                     "--output", "models/cli", "--export", str(out)], tmp_path)
    assert "merged model models/cli/merged" in output and "2/2" in output
    assert (out / "model.safetensors").is_file() and (out / MODELFILE).is_file()
    assert any(info.key.endswith("/gentle.jsonl") for info in LocalStore(tmp_path / "store").list("inputs/"))


def test_run_remote(tmp_path: Path, tiny_model_dir: Path, data: Path) -> None:
    settings = TrainerSettings(store_path=tmp_path / "store", trainer_work_dir=tmp_path / "work")
    service = TrainerService(settings, LocalStore(settings.store_path))
    with grpc_service_in_thread("trainer", settings, add_servicers(service), service.shutdown) as address:
        output = _train(["--data", str(data), "--base-model", str(tiny_model_dir), "--max-steps", "2",
                         "--remote", address], tmp_path)
    assert f"on {address}" in output and "merged model models/" in output


def test_bad_spec_names_the_field_without_traceback(tmp_path: Path, data: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("learning_rate: 5.0\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["train", "run", "--spec", str(spec), "--data", str(data)],
                                env={"EMOTUNE_STORE_PATH": str(tmp_path / "store")})
    assert result.exit_code == 2 and "learning_rate" in result.output and "Traceback" not in result.output
