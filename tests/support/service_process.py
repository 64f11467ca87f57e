"""A service as the containers run it: ``python -m emotune.services.<name>`` in a child process on loopback ports, with its
own process group (its model servers included), so a test can ``kill -9`` all of it as a crash would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from emotune.grpc.probe import check
from emotune.models.server_process import free_port

ROOT = Path(__file__).resolve().parents[2]


class ServiceProcess:
    """``env`` adds to the inherited environment; the gRPC and metrics ports are chosen here. Healthy = its gRPC
    health check answers SERVING for ``emotune.v1.<Service>``."""

    def __init__(self, name: str, log: Path, env: dict[str, str], start_timeout: float = 180.0) -> None:
        self.name, self.log, self.start_timeout = name, log, start_timeout
        self.port, self.metrics_port = free_port(), free_port()
        self.env = {**os.environ, f"EMOTUNE_{name.upper()}_ADDR": self.address,
                    "EMOTUNE_METRICS_PORT": str(self.metrics_port), **env}
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> ServiceProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", f"emotune.services.{self.name}"], cwd=ROOT, env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while not check(self.address, f"emotune.v1.{self.name.capitalize()}", timeout=1.0):
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"{self.name} did not become healthy"
            time.sleep(0.1)
        return self

    def kill9(self) -> None:
        """SIGKILL to the whole process group: no goodbye, no cleanup (a crash or a pulled plug)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill9()
