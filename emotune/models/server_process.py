"""A model server process this process owns, on a loopback port (llama-server, vllm serve).

Subclasses build the command line and call :meth:`LocalServer.launch`; the rest is shared: waiting until
``/health`` answers, the log's telling lines for error messages, counting running generations, and retiring (stop
once the running generations have ended). A server that served and was stopped on request removes its log; one
that never became healthy or died by itself keeps it for inspection (a long-lived stack restarts servers often). The server stays in its owner's process group, so the local stack and
containers stop both together. (No ``preexec_fn``: forking a threaded process with torch/gRPC loaded and running
Python in the child crashes.)
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Self

import httpx

from emotune.errors import CorruptArtifact, Unavailable


def free_port() -> int:
    """A loopback port nothing listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalServer:
    """One server process; ``model`` is what it serves, ``adapters`` the adapters it was started with."""

    program = "server"  # in messages: "<program> could not load ..."
    stop_timeout = 10.0

    def __init__(self, model: Path, adapters: list | tuple = ()) -> None:
        self.model, self.adapters = model, list(adapters)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.active = 0
        self.retired = False
        self.served = False  # became healthy at least once
        self._lock = threading.Lock()
        self._cleanup: list[Path] = []

    def launch(self, args: list[str], log_file: Path) -> None:
        self.log_file = log_file
        with log_file.open("wb") as out:
            self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def __enter__(self) -> Self:
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def describe(self) -> str:
        names = [getattr(a, "name", str(a)) for a in self.adapters]
        return self.model.name + (f" + {', '.join(names)}" if names else "")

    def wait_ready(self, timeout: float = 180.0, poll: float = 0.1) -> None:
        """Block until ``/health`` answers 200; a server that exits or hangs raises with its log's last lines."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise CorruptArtifact(f"{self.program} could not load {self.describe()}: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    self.served = True
                    return
            except httpx.HTTPError:
                pass
            time.sleep(poll)
        self.stop()
        raise Unavailable(f"{self.program} did not become healthy within {timeout:.0f} s: {self.log_tail()}")

    def log_tail(self, lines: int = 6) -> str:
        text = self.log_file.read_text(encoding="utf-8", errors="replace") if self.log_file.exists() else ""
        wanted = [line for line in text.splitlines() if "error" in line.lower() or "failed" in line.lower()]
        return " | ".join((wanted or text.splitlines())[-lines:]) or "no output"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def begin(self) -> None:
        with self._lock:
            self.active += 1

    def end(self) -> None:
        with self._lock:
            self.active -= 1
            done = self.retired and self.active == 0
        if done:
            self.stop()

    def retire(self) -> None:
        """Stop once the running generations have ended (now, if there are none)."""
        with self._lock:
            self.retired = True
            done = self.active == 0
        if done:
            self.stop()

    def stop(self) -> None:
        died_by_itself = self.process.poll() is not None
        if not died_by_itself:
            self.process.terminate()
            try:
                self.process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for path in self._cleanup:
            path.unlink(missing_ok=True)
        if self.served and not died_by_itself:
            self.log_file.unlink(missing_ok=True)
