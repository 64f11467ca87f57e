"""The real XTuner path, in its own virtualenv: generated configs load in mmengine, and a CPU run on a tiny
model goes through ``xtuner.tools.train`` -> ``pth_to_hf`` -> ``merge`` and exports a parity-checked model.

The venv is built once by scripts/xtuner-venv.sh (about 5 minutes the first time, then cached).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from emotune.jobs.store import JobState
from emotune.models.chat_template import ChatFormat
from emotune.services.trainer.spec import TrainingSpec
from emotune.services.trainer.xtuner_backend import LogParser, render_config, xtuner_python
from emotune.store.artifacts import download_artifact
from tests.emotune.services.trainer.conftest import trainer_with_dataset

LOAD_CONFIG = """
import json, sys
from mmengine.config import Config
cfg = Config.fromfile(sys.argv[1])
llm = cfg.model.llm
print(json.dumps({
    "optim": cfg.optim_wrapper.type.__name__, "quant": (llm.get("quantization_config") or {}).get("load_in_4bit"),
    "nf4": (llm.get("quantization_config") or {}).get("bnb_4bit_quant_type"), "dtype": str(llm.torch_dtype),
    "pack": cfg.train_dataset.pack_to_max_length, "tokenize": cfg.train_dataset.do_dataset_tokenization,
    "r": cfg.model.lora.r, "template": cfg.prompt_template["INSTRUCTION"], "loop": cfg.train_cfg.get("max_iters"),
}))
"""


@pytest.fixture(scope="module")
def xtuner_py() -> Path:
    return xtuner_python(None)


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_generated_config_loads_with_mmengine(tmp_path: Path, smollm2_dir: Path, xtuner_py: Path, device: str):
    fmt = ChatFormat.from_pretrained(smollm2_dir)
    spec = TrainingSpec(backend="xtuner", dataset_artifact="d", quantization="4bit",
                        max_steps=100 if device == "cpu" else 0)
    config = tmp_path / "cfg.py"
    config.write_text(render_config(spec, base_dir=smollm2_dir, train_file=tmp_path / "t.jsonl", device=device,
                                    prompt_template=fmt.xtuner_template(), system=None, resume=False, save_steps=50))
    out = subprocess.run([str(xtuner_py), "-c", LOAD_CONFIG, str(config)], capture_output=True, text=True,
                         timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded["pack"] is True and loaded["tokenize"] is False and loaded["r"] == 8
    assert loaded["template"] == "<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n"
    if device == "cuda":  # the production QLoRA config
        assert (loaded["optim"], loaded["quant"], loaded["nf4"], loaded["dtype"]) == (
            "AmpOptimWrapper", True, "nf4", "torch.float16")
        assert loaded["loop"] is None
    else:
        assert (loaded["optim"], loaded["quant"], loaded["dtype"]) == ("OptimWrapper", None, "torch.float32")
        assert loaded["loop"] == 100


def test_log_parser_reads_mmengine_lines():
    parser = LogParser()
    line = ("11/22 06:30:00 - mmengine - INFO - Iter(train) [ 5/20]  lr: 1.0000e-04  eta: 0:00:10  time: 0.5012  "
            "data_time: 0.0100  memory: 0  loss: 2.3456")
    kind, _message, data = parser.parse(line)
    assert kind == "progress" and (data["step"], data["total"], data["loss"], data["lr"]) == (5, 20, 2.3456, 1e-4)
    kind, _message, data = parser.parse("11/22 06:30:01 - mmengine - INFO - Saving checkpoint at 5 iterations")
    assert kind == "checkpoint" and data == {"step": 5, "train_loss": 2.3456}
    assert parser.parse("11/22 - mmengine - INFO - Iter(train) [ 6/20]  lr: 1e-4") is None  # no loss yet


@pytest.mark.slow
@pytest.mark.timeout(2400)
async def test_xtuner_cpu_job_trains_converts_merges_and_exports(tmp_path: Path, tiny_model_dir: Path,
                                                                 xtuner_py: Path):
    service = trainer_with_dataset(tmp_path, "validated/x/kept", trainer_xtuner_venv=xtuner_py.parent.parent, trainer_xtuner_device="cpu")
    store = service.store
    record = await service.start({
        "backend": "xtuner", "base_model": str(tiny_model_dir), "dataset_artifact": "validated/x/kept",
        "max_steps": 6, "batch_size": 2, "max_length": 128, "learning_rate": 3e-3, "eval_every_steps": 3,
        "keep_best_checkpoints": 1, "eval_prompts": ["I lost my keys"], "output_prefix": "models/xt",
    })
    await service.runner.wait(record.job_id)
    job = service.jobs.get(record.job_id)
    events = service.jobs.events(record.job_id)
    assert job.state == JobState.SUCCEEDED, (job.error, [e.message for e in events][-10:])
    progress = [e.data for e in events if e.type == "progress"]
    assert [p["step"] for p in progress] == list(range(1, 7)) and all("loss" in p for p in progress)
    assert [e.data["step"] for e in events if e.type == "checkpoint"] == [3, 6]
    assert "do_dataset_tokenization=False" in job.result["xtuner_config"]
    merged = download_artifact(store, job.result["merged_artifact"], tmp_path / "merged")
    fmt = ChatFormat.from_pretrained(merged)  # the exported template and stop tokens load in the main venv
    assert fmt.stop_tokens == ["<|im_end|>"]
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(merged)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    changed = [n for n, p in model.state_dict().items() if not torch.equal(p, base.state_dict()[n])]
    assert any("q_proj" in n for n in changed)  # the LoRA deltas were merged into the weights
