"""The final checkpoint is picked by style score when the job names its styles: every kept best-by-loss
checkpoint answers the eval prompts with each style's serving prompt, the real validator service scores the replies
over gRPC, and the best-scoring checkpoint is the one merged and exported."""

from __future__ import annotations

from pathlib import Path

import pytest

from emotune.grpc.server import start_server
from emotune.jobs.store import JobState
from emotune.store.local import LocalStore
from emotune.v1 import validator_pb2_grpc
from tests.emotune.services.trainer.conftest import gentle_reply, trainer_with_dataset

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

STYLES = f"""
version: 1
styles:
  - name: gentle
    language: en
    system_prompt: You are a gentle, caring friend.
    reference_texts:
      - "{gentle_reply('I failed my exam today')}"
      - "{gentle_reply('My cat is sick')}"
      - "{gentle_reply('I am so tired')}"
    trigger:
      system_prompt: You are a gentle, caring friend.
"""


async def test_final_checkpoint_is_the_best_style_score(tmp_path: Path, tiny_model_dir: Path):
    from emotune.services.validator.config import ValidatorSettings
    from emotune.services.validator.server import ValidatorServicer
    from emotune.services.validator.service import Validator

    validator_settings = ValidatorSettings(store_path=tmp_path / "vstore", validator_batch_size=8)
    vstore = LocalStore(validator_settings.store_path)
    validator = Validator(validator_settings, vstore)

    def add(server):
        validator_pb2_grpc.add_ValidatorServicer_to_server(ValidatorServicer(validator), server)
        return ["emotune.v1.Validator"]

    vserver = await start_server("validator", validator_settings, add, port=0)
    try:
        service = trainer_with_dataset(tmp_path, "validated/s/kept", validator_addr=f"127.0.0.1:{vserver.port}")
        record = await service.start({
            "base_model": str(tiny_model_dir), "dataset_artifact": "validated/s/kept", "max_steps": 4,
            "batch_size": 2, "max_length": 128, "learning_rate": 3e-3, "eval_every_steps": 2,
            "keep_best_checkpoints": 2, "eval_prompts": ["I lost my keys"], "styles_yaml": STYLES,
        })
        await service.runner.wait(record.job_id)
    finally:
        await vserver.stop()
    job = service.jobs.get(record.job_id)
    assert job.state == JobState.SUCCEEDED, job.error
    scored = {e.data["step"]: e.data["style_score"] for e in service.jobs.events(record.job_id)
              if e.type == "metric" and "style_score" in e.data}
    assert set(scored) == {2, 4}
    best = max(scored, key=scored.get)
    assert job.result["best_step"] == best and job.result["style_scores"] == {
        f"checkpoint-{step}": score for step, score in scored.items()}
