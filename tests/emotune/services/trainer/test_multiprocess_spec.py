"""Multi-process specs without training: what is refused (naming the field), how the global batch is split, the
commands built for torchrun and XTuner's launcher (parsed by torchrun's own argument parser), and the memory
planner against real parameter counts."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch.distributed.run import get_args_parser

from emotune.errors import InvalidInput
from emotune.services.trainer.distrun import failure_reason, torchrun_argv
from emotune.services.trainer.hf_backend import deepspeed_config, distributed_arguments
from emotune.services.trainer.memory import GIB, QWEN25, Shape, plan, plan_spec, table
from emotune.services.trainer.spec import TrainingSpec, check_devices, per_process_batch, spec_from_proto
from emotune.services.trainer.xtuner_backend import LAUNCHER, render_config, train_command
from emotune.v1 import trainer_pb2


def _spec(**fields: object) -> TrainingSpec:
    return TrainingSpec.parse({"dataset_artifact": "d", **fields}, "spec.yaml")


@pytest.mark.parametrize(("fields", "field", "words"), [
    ({"backend": "xtuner", "quantization": "4bit", "strategy": "zero3", "processes": 2}, "strategy", "zero3"),
    ({"backend": "xtuner", "strategy": "fsdp", "processes": 2}, "strategy", "FSDP"),
    ({"processes": 2, "batch_size": 3}, "processes", "does not split"),
    ({"processes": 2, "method": "dpo"}, "processes", "dpo"),
    ({"processes": 0}, "processes", "greater than or equal to 1"),
    ({"strategy": "zero1"}, "strategy", "ddp"),
])
def test_bad_combinations_are_refused_naming_the_field(fields, field, words):
    with pytest.raises(InvalidInput) as info:
        _spec(**fields)
    assert info.value.field == field and info.value.file == "spec.yaml" and words in info.value.message


@pytest.mark.parametrize(("fields", "device", "gpus", "field", "words"), [
    ({"processes": 4}, "cuda", 2, "processes", "2 GPU"),
    ({"processes": 2, "strategy": "zero2"}, "cpu", 0, "strategy", "needs CUDA"),
    ({"processes": 2, "strategy": "fsdp"}, "cpu", 0, "strategy", "needs CUDA"),
    ({"processes": 2, "backend": "xtuner"}, "cpu", 0, "processes", "needs CUDA"),
])
def test_what_the_machine_cannot_run_is_refused(fields, device, gpus, field, words):
    with pytest.raises(InvalidInput) as info:
        check_devices(_spec(**fields), device, gpus)
    assert info.value.field == field and words in info.value.message


def test_what_the_machine_can_run_passes():
    check_devices(_spec(processes=2), "cpu", 0)  # hf ddp over gloo
    check_devices(_spec(processes=2, backend="xtuner", strategy="zero3"), "cuda", 2)
    check_devices(_spec(processes=4), "cpu", 0)  # CPU processes are not devices: oversubscribing only slows


def test_proto_zeros_mean_one_process_ddp_and_the_fields_travel():
    spec = TrainingSpec.parse(spec_from_proto(trainer_pb2.TrainingSpec(dataset_artifact="d")))
    assert (spec.processes, spec.strategy) == (1, "ddp")
    sent = trainer_pb2.TrainingSpec(dataset_artifact="d", backend="xtuner", processes=4, strategy="zero3")
    spec = TrainingSpec.parse(spec_from_proto(sent))
    assert (spec.processes, spec.strategy) == (4, "zero3")


@pytest.mark.parametrize(("batch", "accumulation", "processes", "expected"), [
    (4, 1, 1, (4, 1)), (4, 1, 2, (2, 1)), (4, 4, 2, (4, 2)), (3, 2, 2, (3, 1)), (2, 8, 8, (2, 1)), (6, 2, 4, (3, 1)),
])
def test_the_global_batch_is_kept(batch, accumulation, processes, expected):
    per_device, accumulation_per_process = per_process_batch(batch, accumulation, processes)
    assert (per_device, accumulation_per_process) == expected
    assert per_device * accumulation_per_process * processes == batch * accumulation and per_device <= batch


def test_torchrun_command_parses_with_torchrun_itself():
    argv = torchrun_argv("/venv/python", 2, "emotune.services.trainer.worker", ["--spec", "s.json", "--work-dir", "w"])
    assert argv[:3] == ["/venv/python", "-m", "emotune.services.trainer.distrun"]
    args = get_args_parser().parse_args(argv[3:])
    assert (args.nproc_per_node, args.standalone, args.max_restarts, args.module) == ("2", True, 0, True)
    assert (args.training_script, args.training_script_args) == ("emotune.services.trainer.worker",
                                                                 ["--spec", "s.json", "--work-dir", "w"])


def test_training_arguments_per_strategy():
    assert distributed_arguments("ddp", 1, False) == {}
    assert distributed_arguments("ddp", 2, False) == {"ddp_backend": "gloo", "ddp_find_unused_parameters": False}
    assert distributed_arguments("fsdp", 2, True)["fsdp"] == "full_shard auto_wrap"
    zero3 = distributed_arguments("zero3", 4, True)
    assert zero3["ddp_backend"] == "nccl" and zero3["deepspeed"]["zero_optimization"]["stage"] == 3
    assert deepspeed_config(2)["zero_optimization"]["stage"] == 2
    assert "stage3_gather_16bit_weights_on_model_save" not in deepspeed_config(2)["zero_optimization"]


@pytest.mark.parametrize(("strategy", "deepspeed"), [("zero2", "deepspeed_zero2"), ("zero3", "deepspeed_zero3"),
                                                     ("ddp", None)])
def test_xtuner_multi_process_command_follows_its_launcher(strategy, deepspeed, tmp_path: Path):
    spec = _spec(backend="xtuner", processes=4, strategy=strategy)
    argv, env = train_command(Path("/xt/bin/python"), spec, tmp_path / "cfg.py", tmp_path / "w")
    assert env == {"NPROC_PER_NODE": "4", "NNODES": "1"}
    assert argv[:3] == ["/xt/bin/python", str(LAUNCHER), "torch.distributed.run"]
    args = get_args_parser().parse_args(argv[3:])
    assert (args.nproc_per_node, args.standalone, args.training_script) == ("4", True, str(LAUNCHER))
    tool = args.training_script_args
    assert tool[:4] == ["xtuner.tools.train", str(tmp_path / "cfg.py"), "--work-dir", str(tmp_path / "w")]
    assert tool[tool.index("--launcher") + 1] == "pytorch"
    assert (tool[tool.index("--deepspeed") + 1] if "--deepspeed" in tool else None) == deepspeed


def test_xtuner_one_process_command_is_the_tool_alone(tmp_path: Path):
    argv, env = train_command(Path("/xt/bin/python"), _spec(backend="xtuner"), tmp_path / "c.py", tmp_path / "w")
    assert argv == ["/xt/bin/python", str(LAUNCHER), "xtuner.tools.train", str(tmp_path / "c.py"), "--work-dir",
                    str(tmp_path / "w")] and env == {}


def test_xtuner_config_keeps_the_global_batch(tmp_path: Path):
    spec = _spec(backend="xtuner", processes=2, batch_size=4, grad_accumulation=2)
    config = render_config(spec, base_dir=tmp_path, train_file=tmp_path / "t.jsonl", device="cuda",
                           prompt_template={}, system=None, resume=False, save_steps=10)
    assert "batch_size = 4  # per device" in config and "accumulative_counts = 1\n" in config


def test_torchrun_failure_report_becomes_one_line():
    report = """[rank0]: something
Root Cause (first observed failure):
[0]:
  time      : 2026-12-07_02:26:25
  host      : localhost
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 4368)
  error_file: <N/A>
  traceback : Signal 9 (SIGKILL) received by PID 4368
"""
    assert failure_reason(report) == "rank 1 (exit code -9: Signal 9 (SIGKILL) received by PID 4368)"
    assert failure_reason("Traceback ...\nValueError: x") is None


PUBLISHED = {"Qwen2.5-1.5B": 1.54e9, "Qwen2.5-7B": 7.61e9, "Qwen2.5-14B": 14.7e9, "Qwen2.5-32B": 32.5e9,
             "Qwen2.5-72B": 72.7e9}


def test_parameter_counts_match_the_published_ones():
    for name, config in QWEN25.items():
        assert abs(Shape.from_config(config).params / PUBLISHED[name] - 1) < 0.01, name


def test_planner_counts_the_real_model_and_its_lora(tiny_model_dir: Path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    shape = Shape.from_model_dir(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, torch_dtype=torch.float32)
    assert shape.params == sum(p.numel() for p in model.parameters())
    lora = get_peft_model(model, LoraConfig(r=8, target_modules=list(shape.matrices()), task_type="CAUSAL_LM"))
    assert shape.lora_params(8) == sum(p.numel() for p in lora.parameters() if p.requires_grad)


def test_sharding_divides_what_it_should():
    shape = Shape.from_config(QWEN25["Qwen2.5-7B"])
    one = plan(shape, "lora")
    zero3 = plan(shape, "lora", gpus=4, strategy="zero3")
    ddp = plan(shape, "lora", gpus=4, strategy="ddp")
    assert ddp.per_gpu == one.per_gpu  # DDP replicates everything
    assert zero3.weights == one.weights / 4 and zero3.trainable_state == one.trainable_state / 4
    assert zero3.activations == one.activations  # activations are per micro-batch, never sharded
    qlora = plan(shape, "qlora")
    assert qlora.weights < one.weights / 2.5 and qlora.trainable_state == one.trainable_state
    full = plan(shape, "full", gpus=8, strategy="zero2")
    assert full.weights == shape.params * 2 and full.trainable_state == shape.params * 14 / 8
    assert plan(shape, seq_len=4096).activations > 1.9 * one.activations - 1  # linear in the sequence
    # the figure: QLoRA 32B on one card is about 24 GB
    assert 20 < plan(Shape.from_config(QWEN25["Qwen2.5-32B"]), "qlora").per_gpu / GIB < 28


def test_plan_of_a_spec_uses_its_per_process_batch_and_backend():
    shape = Shape.from_config(QWEN25["Qwen2.5-7B"])
    spec = _spec(backend="xtuner", processes=2, strategy="zero2", batch_size=4, max_length=1024,
                 quantization="4bit")
    assert plan_spec(spec, shape) == plan(shape, "qlora", seq_len=1024, micro_batch=2, gpus=2, strategy="zero2")
    hf = _spec(max_length=1024)
    assert plan_spec(hf, shape) == plan(shape, "lora", seq_len=1024, micro_batch=4, checkpointing=False)


def test_the_docs_table_is_the_generated_one():
    docs = (Path(__file__).resolve().parents[4] / "docs" / "trainer.md").read_text(encoding="utf-8")
    assert table() in docs, "regenerate with: python -m emotune.services.trainer.memory --table"


def test_a_pytorchjob_node_joins_the_master_with_torchrun():
    from emotune.services.trainer.distrun import Nodes

    operator_env = {"PET_NNODES": "2", "PET_NODE_RANK": "1", "PET_MASTER_ADDR": "big-run-master-0",
                    "PET_MASTER_PORT": "23456", "WORLD_SIZE": "2", "RANK": "1"}
    nodes = Nodes.from_env(operator_env)
    assert nodes == Nodes(2, 1, "big-run-master-0", 23456)
    assert Nodes.from_env({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "m", "MASTER_PORT": "1"}) == \
        Nodes(2, 0, "m", 1)  # an operator without nprocPerNode: the pod-level variables
    with pytest.raises(KeyError, match="PyTorchJob"):
        Nodes.from_env({})
    args = get_args_parser().parse_args(torchrun_argv("py", 8, "emotune.services.trainer.worker", ["--spec", "s"], nodes)[3:])
    assert (args.nnodes, args.node_rank, args.master_addr, args.master_port, args.nproc_per_node, args.standalone) \
        == ("2", 1, "big-run-master-0", 23456, "8", False)
