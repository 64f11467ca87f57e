"""``emotune validate``: local validation with a progress bar, scoring, and clear errors (exit code 2)."""

import json
from pathlib import Path

from typer.testing import CliRunner

from emotune.cli.main import app
from emotune.data.records import dumps_records

DATA = Path(__file__).parent / "data"

runner = CliRunner()


def test_run_writes_the_outputs_and_reports_bad_lines(tmp_path, good_records, bad_records):
    picked = [*good_records[:4], *(r for r in bad_records if r.id in {"refusal-as-ai", "too-long"})]
    dataset = tmp_path / "gen.jsonl"
    dataset.write_text(dumps_records(picked) + '{"id": "broken", "messages": [\n', encoding="utf-8")
    out = tmp_path / "out"
    result = runner.invoke(app, ["validate", "run", str(dataset), "--styles", str(DATA / "styles.yaml"),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"{dataset}:7: broken JSON" in result.output
    assert "refusal" in result.output and "温柔" in result.output
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["counts"]["kept"] == 4 and report["counts"]["input_errors"] == 1
    assert len((out / "kept.jsonl").read_text(encoding="utf-8").splitlines()) == 4
    assert {p.name for p in out.glob("*.png")} == {"similarity.png", "reasons.png", "lengths.png"}


def test_score_prints_a_table(good_records):
    result = runner.invoke(app, ["validate", "score", "--styles", str(DATA / "styles.yaml"), "--style", "毒舌",
                                 good_records[8].assistant_text])
    assert result.exit_code == 0, result.output
    assert "style accuracy 1.00" in result.output


def test_errors_name_the_file_and_exit_2(tmp_path):
    styles = tmp_path / "styles.yaml"
    styles.write_text("styles:\n  - name: 温柔\n    system_prompt: x\n    temperature: 7\n", encoding="utf-8")
    result = runner.invoke(app, ["validate", "run", str(tmp_path / "missing.jsonl"), "--styles", str(styles)])
    assert result.exit_code == 2
    assert f"{styles}:4: styles[0].temperature" in result.output
