"""Issue 29, item 4: the trainer loads only a registered base model (over real gRPC), and never a model's own code:
XTuner's tools run with ``trust_remote_code`` forced off, though its merge tool asks for it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from emotune.grpc.client import open_channel
from emotune.grpc.server import start_server
from emotune.services.trainer.server import add_servicers
from emotune.services.trainer.xtuner_backend import ROOT
from emotune.v1 import trainer_pb2, trainer_pb2_grpc
from tests.emotune.services.trainer.conftest import trainer_with_dataset


def _model_with_code(folder: Path, marker: Path) -> Path:
    """A model directory whose config asks transformers to import its own module, which leaves a marker."""
    folder.mkdir()
    (folder / "config.json").write_text(
        '{"model_type": "evil", "auto_map": {"AutoConfig": "evil.EvilConfig"}}', encoding="utf-8")
    (folder / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import PretrainedConfig\nclass EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n",
        encoding="utf-8")
    return folder


async def test_a_training_spec_names_only_a_registered_base_model(tmp_path: Path) -> None:
    service = trainer_with_dataset(tmp_path, "validated/l/kept")
    model = _model_with_code(tmp_path / "model", tmp_path / "ran")
    server = await start_server("trainer", service.settings, add_servicers(service), port=0)
    channel = open_channel(f"127.0.0.1:{server.port}", service.settings)
    try:
        stub = trainer_pb2_grpc.TrainerStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.StartTraining(trainer_pb2.TrainingSpec(base_model=str(model),
                                                              dataset_artifact="validated/l/kept"))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "base_model" in refused.value.details() and "not a registered base model" in refused.value.details()
        assert "allowed: qwen2.5-0.5b, qwen2.5-1.5b, gemma3-270m, smollm2-135m" in refused.value.details()
        assert service.jobs.list("training") == []
    finally:
        await channel.close()
        await server.stop()
        await service.shutdown()


def test_xtuner_tools_never_run_a_models_own_code(tmp_path: Path) -> None:
    """The launcher's guard, as XTuner's merge tool calls transformers (``trust_remote_code=True``)."""
    marker = tmp_path / "ran"
    model = _model_with_code(tmp_path / "model", marker)
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import xtuner_launch; xtuner_launch.refuse_remote_code()\n"
              "from transformers import AutoConfig\n"
              "try:\n    AutoConfig.from_pretrained(sys.argv[2], trust_remote_code=True)\n"
              "except ValueError as exc:\n    print('refused:', exc)\n")
    done = subprocess.run([sys.executable, "-c", script, str(ROOT / "emotune" / "services" / "trainer"), str(model)],
                          capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    assert "refused:" in done.stdout and not marker.exists(), done.stdout


def test_the_generated_xtuner_config_does_not_trust_remote_code(tmp_path: Path, smollm2_dir: Path) -> None:
    from emotune.models.chat_template import ChatFormat
    from emotune.services.trainer.spec import TrainingSpec
    from emotune.services.trainer.xtuner_backend import render_config

    config = render_config(TrainingSpec(backend="xtuner", dataset_artifact="d"), base_dir=smollm2_dir,
                           train_file=tmp_path / "t.jsonl", device="cpu",
                           prompt_template=ChatFormat.from_pretrained(smollm2_dir).xtuner_template(), system=None,
                           resume=False, save_steps=50)
    assert "trust_remote_code=True" not in config and config.count("trust_remote_code=False") == 2
