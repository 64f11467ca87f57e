"""``python -m emotune.services.trainer.nodejob --spec FILE --name NAME``: one node of a multi-node hf run (one pod of a
Kubeflow ``PyTorchJob``, ``k8s/overlays/gpu-pytorchjob``).

Every node fetches the dataset and the base model as the trainer service does, then starts ``torchrun`` with
``processes`` workers joined to the other nodes (:class:`emotune.services.trainer.distrun.Nodes`, from the variables the
training operator sets). The global batch ``batch_size x grad_accumulation`` is split over all processes of all
nodes. Global rank 0 (on the master node) reports, checkpoints and merges; the master then exports and publishes
under ``output_prefix`` (default ``models/<name>``) exactly as a trainer job does (chat-template files, parity
check, adapter, merged model, report). A rerun with the same name resumes from the last checkpoint only where
every node sees the same work dir (``EMOTUNE_TRAINER_WORK_DIR`` on a ReadWriteMany volume): rank 0 alone writes
the checkpoints, and ranks that found none would start over beside it. No job record and no lease: the PyTorchJob is the unit the cluster schedules and restarts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml


def main(argv: list[str] | None = None) -> int:
    from emotune.models.basemodels import resolve_base_model
    from emotune.models.loadable import check_base_model
    from emotune.services.trainer.config import TrainerSettings
    from emotune.services.trainer.distrun import Nodes, torchrun_argv
    from emotune.services.trainer.service import TrainerService
    from emotune.services.trainer.spec import TrainingSpec, check_devices, local_devices
    from emotune.services.trainer.worker import OUTPUT_DIR
    from emotune.store import open_store

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", type=Path, required=True, help="a TrainingSpec (YAML or JSON), backend hf")
    parser.add_argument("--name", required=True, help="the run's name: its work dir and default output prefix")
    args = parser.parse_args(argv)
    settings = TrainerSettings()
    spec = TrainingSpec.parse(yaml.safe_load(args.spec.read_text(encoding="utf-8")), str(args.spec))
    if spec.backend != "hf":
        raise SystemExit(f"{args.spec}: backend: a multi-node run uses the hf backend (torchrun)")
    spec = spec.model_copy(update={"output_prefix": spec.output_prefix or f"models/{args.name}"})
    check_devices(spec, *local_devices())
    nodes = Nodes.from_env(os.environ)
    service = TrainerService(settings, open_store(settings))
    work = settings.work_root / args.name
    data, general = service.fetch_inputs(spec, work)
    base_dir = resolve_base_model(check_base_model(spec.base_model, settings, "base_model"), settings.cache_dir)
    argv_ = torchrun_argv(sys.executable, spec.processes, "emotune.services.trainer.worker",
                          service.worker_args(spec, base_dir, data, general, work), nodes)
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}  # torchrun sets its own
    print(f"node {nodes.rank} of {nodes.count}, {spec.processes} processes: {' '.join(argv_)}", flush=True)
    code = subprocess.run(argv_, env=env, check=False).returncode  # worker output goes to the pod's log
    if code != 0 or nodes.rank != 0:
        return code
    run = json.loads((work / OUTPUT_DIR / "run.json").read_text(encoding="utf-8"))
    result = service.export_run(spec, spec.model_dump(mode="json"), base_dir, data, work, run)
    print(json.dumps({k: v for k, v in result.items() if k.endswith("_artifact")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
