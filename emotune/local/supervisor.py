"""The embedded default: every service as a local process on loopback, a local-directory store, CPU engines.

``LocalStack`` starts the services together, waits for each to be healthy (gRPC health / HTTP
readiness), writes pid files and logs under the state directory, and stops them gracefully (SIGTERM, then
SIGKILL after a grace period). The same environment variables a container would get configure each process.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from emotune.grpc.probe import check as grpc_healthy
from emotune.logging import get_logger
from emotune.models.basemodels import DEFAULT_BASE_MODEL, OFFLINE_TEACHER_MODEL
from emotune.settings import Settings

log = get_logger(__name__)

# Default ports (plus the stack's offset); the same as compose and Kubernetes use. The gRPC ones are the defaults
# of the shared ``<service>_addr`` settings.
GRPC_PORTS = {name: int(Settings.model_fields[f"{name}_addr"].default.rsplit(":", 1)[1])
              for name in ("datagen", "validator", "trainer", "inference", "pipeline")}
METRICS_PORTS = {"datagen": 9101, "validator": 9102, "trainer": 9103, "inference": 9104, "pipeline": 9105,
                 "gateway": 9106}
# Generations the local inference service runs at once (its slots), unless EMOTUNE_INFERENCE_MAX_CONCURRENCY says.
LOCAL_INFERENCE_SLOTS = 2
GATEWAY_PORT, UI_PORT = 8000, 8501


def _ephemeral_port_range() -> range:
    """The kernel's range for outgoing connections' local ports: any client socket may take one at any moment."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return range(low, high + 1)


def free_port_offset(low: int = 1000, high: int = 15400, attempts: int = 50) -> int:
    """A random offset at which every port a stack uses is free on loopback (tests run stacks side by side).

    Offsets that would put a port inside the ephemeral range are skipped: a port there can be free when checked
    and taken by some client's outgoing connection before the service binds it.
    """
    import random
    import socket

    bases = [*GRPC_PORTS.values(), *METRICS_PORTS.values(), GATEWAY_PORT, UI_PORT]
    ephemeral = _ephemeral_port_range()
    candidates = [offset for offset in range(low, high)
                  if not any(base + offset in ephemeral for base in bases)] or list(range(low, high))
    for offset in random.sample(candidates, min(attempts, len(candidates))):
        try:
            for base in bases:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        return offset
    raise RuntimeError(f"no free block of ports at offsets {low}..{high}")


@dataclass(frozen=True)
class LocalService:
    name: str
    argv: list[str]
    # "grpc" (health service on port) or "http" (GET health_path returns 200)
    probe: str
    port: int
    health_path: str = ""
    start_timeout: float = 300.0

    def healthy(self) -> bool:
        if self.probe == "grpc":
            return grpc_healthy(f"127.0.0.1:{self.port}", timeout=1.0)
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}{self.health_path}", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False


@dataclass
class LocalStack:
    state_dir: Path
    base_model: str = DEFAULT_BASE_MODEL
    port_offset: int = 0
    with_ui: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    # The offline teacher, and whether the validator's judge (the same model) reads style and sense.
    teacher_model: str = OFFLINE_TEACHER_MODEL
    judge: bool = True

    def __post_init__(self) -> None:
        self._processes: dict[str, subprocess.Popen] = {}
        self.state_dir = Path(self.state_dir).resolve()
        for sub in ("logs", "run", "store"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ layout
    def port(self, base: int) -> int:
        return base + self.port_offset

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.port(GATEWAY_PORT)}"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port(UI_PORT)}"

    @property
    def api_key(self) -> str:
        """A key for this installation, created once (0600) and reused, never printed in logs."""
        path = self.state_dir / "api-key"
        if not path.exists():
            path.write_text(f"sk-local-{secrets.token_urlsafe(24)}")
            path.chmod(0o600)
        return path.read_text().strip()

    def services(self) -> list[LocalService]:
        python = sys.executable
        services = [LocalService(name, [python, "-m", f"emotune.services.{name}"], "grpc", self.port(port))
                    for name, port in GRPC_PORTS.items()]
        services.append(LocalService("gateway", [python, "-m", "emotune.services.gateway"], "http", self.port(GATEWAY_PORT),
                                     "/readyz"))
        if self.with_ui:
            services.append(LocalService("ui", [python, "-m", "emotune.services.ui"], "http", self.port(UI_PORT),
                                         "/_stcore/health"))
        return services

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "EMOTUNE_ENV": "dev",
            "EMOTUNE_STORE_BACKEND": "local",
            "EMOTUNE_STORE_PATH": str(self.state_dir / "store"),
            "EMOTUNE_GRPC_BIND": "127.0.0.1",
            **{f"EMOTUNE_{name.upper()}_ADDR": f"127.0.0.1:{self.port(port)}" for name, port in GRPC_PORTS.items()},
            "EMOTUNE_GATEWAY_PORT": str(self.port(GATEWAY_PORT)),
            "EMOTUNE_GATEWAY_URL": self.gateway_url,
            "EMOTUNE_GATEWAY_API_KEYS": self.api_key,
            # The offline teacher is our own gateway serving the packaged 1.5B Qwen (a bigger model of the
            # student's family: plain distillation); datagen reads the key from the variable named here (the key
            # itself never enters a job spec). The same model is the validator's judge of style and sense.
            "EMOTUNE_DATAGEN_TEACHER_BASE_URL": f"{self.gateway_url}/v1",
            "EMOTUNE_DATAGEN_TEACHER_MODEL": self.teacher_model,
            "EMOTUNE_DATAGEN_TEACHER_API_KEY_ENV": "EMOTUNE_LOCAL_TEACHER_KEY",
            "EMOTUNE_LOCAL_TEACHER_KEY": self.api_key,
            **({"EMOTUNE_VALIDATOR_JUDGE_BASE_URL": f"{self.gateway_url}/v1",
                "EMOTUNE_VALIDATOR_JUDGE_MODEL": self.teacher_model,
                "EMOTUNE_VALIDATOR_JUDGE_API_KEY_ENV": "EMOTUNE_LOCAL_TEACHER_KEY"} if self.judge else {}),
            "EMOTUNE_UI_API_KEY": self.api_key,
            "EMOTUNE_UI_PORT": str(self.port(UI_PORT)),
            "EMOTUNE_INFERENCE_PRELOAD": ",".join(dict.fromkeys([self.base_model, self.teacher_model])),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        })
        # The offline teacher is one CPU inference service running the small base model: datagen sends it as
        # many requests as it has generation slots (more only queue there until they time out and are retried),
        # with CPU-sized timeouts, and asks for one paragraph of at most 96 tokens (the styles' replies are two or
        # three sentences, ~60 tokens; longer is a loop the validator drops anyway). Each can be overridden from
        # the environment. llama.cpp keeps each slot's prompt cache: the teacher's requests of a style (and the
        # evaluation's full-prompt requests) share a ~300-token system + few-shot prefix, evaluated once instead of
        # per request (llama-server drops a slot's cache when the request's LoRA adapters differ).
        # LoRA steps run under bf16 autocast where the CPU has native bf16 (about twice as fast).
        slots = env.setdefault("EMOTUNE_INFERENCE_MAX_CONCURRENCY", str(LOCAL_INFERENCE_SLOTS))
        for name, value in {"EMOTUNE_DATAGEN_OPENAI_MAX_CONCURRENCY": slots, "EMOTUNE_DATAGEN_TIMEOUT_SECONDS": "300",
                            "EMOTUNE_DATAGEN_MAX_TOKENS": "96", "EMOTUNE_DATAGEN_TEACHER_STOP": '["\\n"]',
                            "EMOTUNE_INFERENCE_LLAMACPP_PROMPT_CACHE": "true",
                            "EMOTUNE_TRAINER_CPU_BF16": "true"}.items():
            env.setdefault(name, value)
        # The stack's base model is its operator's choice: a job may name it too (emotune.models.loadable).
        packaged = Settings.model_fields["allowed_base_models"].default.split(",")
        env.setdefault("EMOTUNE_ALLOWED_BASE_MODELS", ",".join(dict.fromkeys([*packaged, self.base_model])))
        env.update(self.extra_env)
        return env

    # ------------------------------------------------------------------ processes
    def _pid_file(self, name: str) -> Path:
        return self.state_dir / "run" / f"{name}.pid"

    def running_pid(self, name: str) -> int | None:
        process = self._processes.get(name)
        if process is not None:  # our own child: poll() also reaps it once it has exited
            return process.pid if process.poll() is None else None
        try:
            pid = int(self._pid_file(name).read_text())
            os.kill(pid, 0)
            return pid
        except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
            return None

    def start(self, on_status=lambda name, status: None) -> None:
        """Start every service that is not running at once, then wait for each to be healthy.

        The services find each other lazily (gRPC channels connect on first call, the gateway's readiness waits
        for the inference service), so none needs another to be up before it starts: starting them together lets
        one load its models while another imports torch, instead of one after the other.
        """
        env = self.environment()
        started: list[tuple[LocalService, subprocess.Popen]] = []
        for service in self.services():
            if self.running_pid(service.name) and service.healthy():
                on_status(service.name, "already running")
                continue
            metrics_port = METRICS_PORTS.get(service.name)
            metrics = {"EMOTUNE_METRICS_PORT": str(self.port(metrics_port))} if metrics_port else {}
            log_file = (self.state_dir / "logs" / f"{service.name}.log").open("ab")
            process = subprocess.Popen(
                service.argv, env={**env, **metrics}, stdout=log_file, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, cwd=Path(__file__).resolve().parents[2],
            )
            self._processes[service.name] = process
            self._pid_file(service.name).write_text(str(process.pid))
            on_status(service.name, "starting")
            started.append((service, process))
        for service, process in started:
            self._wait_healthy(service, process)
            on_status(service.name, "healthy")

    def _wait_healthy(self, service: LocalService, process: subprocess.Popen) -> None:
        deadline = time.monotonic() + service.start_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = (self.state_dir / "logs" / f"{service.name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{service.name} exited with code {process.returncode}:\n{tail}")
            if service.healthy():
                return
            time.sleep(0.5)
        raise RuntimeError(f"{service.name} not healthy after {service.start_timeout:.0f}s "
                           f"(log: {self.state_dir / 'logs' / (service.name + '.log')})")

    def stop(self, grace: float = 15.0) -> list[str]:
        stopped = []
        for service in reversed(self.services()):
            pid = self.running_pid(service.name)
            if pid is None:
                self._pid_file(service.name).unlink(missing_ok=True)
                continue
            os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and self.running_pid(service.name):
                time.sleep(0.2)
            if self.running_pid(service.name):
                os.killpg(pid, signal.SIGKILL)
            self._pid_file(service.name).unlink(missing_ok=True)
            stopped.append(service.name)
        return stopped

    def status(self) -> dict[str, str]:
        return {
            s.name: ("healthy" if s.healthy() else "unhealthy") if self.running_pid(s.name) else "stopped"
            for s in self.services()
        }
