"""``python -m emotune.services.trainer.distrun [torchrun options] -m MODULE ...``: torchrun that dies with its parent.

The service starts a multi-process hf run through this: ``torch.distributed.run`` (torchrun) itself, after
``PR_SET_PDEATHSIG`` so that a killed trainer service does not leave torchrun's agent (and with it, through each
worker's own death signal, the workers) training on a work dir that another replica is about to adopt.

:func:`torchrun_argv` builds the command; :func:`failure_reason` turns torchrun's failure report into one line
(which rank failed, its exit code or signal).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_RANK = re.compile(r"^\s*rank\s*:\s*(\d+)", re.MULTILINE)
_EXIT = re.compile(r"^\s*exitcode\s*:\s*(-?\d+)", re.MULTILINE)
_TRACEBACK = re.compile(r"^\s*traceback\s*:\s*(.+)$", re.MULTILINE)


def torchrun_argv(python: str, processes: int, module: str, args: Sequence[str],
                  nodes: Nodes | None = None) -> list[str]:
    """``processes`` workers running ``python -m module args``: on one node with a free rendezvous port
    (``--standalone``: two runs on one node do not collide), or as one of ``nodes`` (a static rendezvous at the
    master). No in-place restarts (``--max-restarts 0``): on CPU the restarted gloo group failed to connect
    (connectFullMesh refused); the service starts a new torchrun instead (``EMOTUNE_TRAINER_MAX_RESTARTS``), which
    resumes from the last checkpoint."""
    where = ["--standalone", "--nnodes", "1"] if nodes is None else [
        "--nnodes", str(nodes.count), "--node-rank", str(nodes.rank), "--master-addr", nodes.master_addr,
        "--master-port", str(nodes.master_port)]
    return [python, "-m", "emotune.services.trainer.distrun", *where, "--nproc-per-node", str(processes), "--max-restarts",
            "0", "--monitor-interval", "0.5", "-m", module, *args]


@dataclass(frozen=True)
class Nodes:
    """This node's place in a multi-node run."""

    count: int
    rank: int
    master_addr: str
    master_port: int

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Nodes:
        """From the variables Kubeflow's training operator sets in a PyTorchJob pod: torchrun's ``PET_*`` (with
        ``nprocPerNode``), else ``WORLD_SIZE`` / ``RANK`` (pods) and ``MASTER_ADDR`` / ``MASTER_PORT``."""
        def get(pet: str, plain: str) -> str:
            value = env.get(pet) or env.get(plain)
            if not value:
                raise KeyError(f"neither {pet} nor {plain} is set: not a PyTorchJob pod?")
            return value

        return cls(int(get("PET_NNODES", "WORLD_SIZE")), int(get("PET_NODE_RANK", "RANK")),
                   get("PET_MASTER_ADDR", "MASTER_ADDR"), int(get("PET_MASTER_PORT", "MASTER_PORT")))


def failure_reason(output: str) -> str | None:
    """"rank 1 (exit code -9: Signal 9 (SIGKILL) received by PID 123)" from torchrun's "Root Cause" report."""
    start = output.find("Root Cause")
    if start < 0:
        return None
    report = output[start:]
    rank, code, traceback = _RANK.search(report), _EXIT.search(report), _TRACEBACK.search(report)
    if rank is None or code is None:
        return None
    detail = traceback.group(1).strip() if traceback else ""
    detail = "" if detail.startswith("To enable traceback") else detail
    return f"rank {rank.group(1)} (exit code {code.group(1)}{': ' + detail if detail else ''})"


def main(argv: list[str] | None = None) -> None:
    from emotune.services.trainer.worker import die_with_parent

    die_with_parent()
    from torch.distributed.run import main as torchrun

    torchrun(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
