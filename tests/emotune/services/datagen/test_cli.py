"""``emotune datagen run``: in-process and against a running service (--remote), files exported locally."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from emotune.cli.main import app
from emotune.data.records import parse_records
from emotune.services.datagen.server import add_servicers
from emotune.services.datagen.service import DatagenService
from emotune.store.local import LocalStore
from tests.emotune.services.datagen.conftest import TEST_TEACHER, name_test_teacher
from tests.support.grpc_thread import grpc_service_in_thread


@pytest.fixture
def files(tmp_path, styles_yaml):
    styles = tmp_path / "styles.yaml"
    styles.write_text(styles_yaml, encoding="utf-8")
    questions = tmp_path / "questions.txt"
    questions.write_text("今天好累啊\n下雨了没带伞\n周末去哪玩\n", encoding="utf-8")
    return styles, questions


def _run(args, store_dir, teacher_url=""):
    """The CLI with the operator's default teacher at ``teacher_url`` (EMOTUNE_DATAGEN_TEACHER_BASE_URL)."""
    env = {"EMOTUNE_STORE_PATH": str(store_dir), "EMOTUNE_DATAGEN_TEACHER_BASE_URL": teacher_url or None}
    result = CliRunner().invoke(app, ["datagen", "run", *args], env=env)
    assert result.exit_code == 0, result.output
    return result


def test_run_in_process_and_export(tmp_path, teacher, files):
    styles, questions = files
    out = tmp_path / "out"
    result = _run(["--styles", str(styles), "--questions", str(questions), "--limit", "2", "--style", "温柔",
                   "--model", "teacher-test", "--export", str(out)], tmp_path / "s", teacher.base_url)
    assert "2 records, 0 failures" in result.output and "2/2" in result.output
    records, _ = parse_records((out / "records.jsonl").read_text(encoding="utf-8"), strict=True)
    assert [r.first_user_text for r in records] == ["今天好累啊", "下雨了没带伞"]
    assert json.loads((out / "stats.json").read_text(encoding="utf-8"))["ok"] == 2
    # the question file was copied into the store under a content-addressed key
    assert any(info.key.endswith("/questions.txt") for info in LocalStore(tmp_path / "s").list("inputs/"))


def test_run_reports_bad_input_without_traceback(tmp_path, teacher, files):
    styles, questions = files
    result = CliRunner().invoke(app, ["datagen", "run", "--styles", str(styles), "--questions", str(questions),
                                      "--style", "傲娇", "--model", "m"],
                                env={"EMOTUNE_STORE_PATH": str(tmp_path / "s"),
                                     "EMOTUNE_DATAGEN_TEACHER_BASE_URL": teacher.base_url})
    assert result.exit_code == 2 and "style_names[0]" in result.output and "傲娇" in result.output


def test_run_remote(tmp_path, settings, teacher, files):
    styles, questions = files
    name_test_teacher(settings, teacher)
    service = DatagenService(settings, LocalStore(settings.store_path))
    with grpc_service_in_thread("datagen", settings, add_servicers(service), service.shutdown) as address:
        result = _run(["--styles", str(styles), "--questions", str(questions), "--teacher", TEST_TEACHER,
                       "--remote", address], settings.store_path)
    assert "6 records, 0 failures" in result.output and f"on {address}" in result.output
