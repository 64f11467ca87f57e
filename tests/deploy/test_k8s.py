"""k8s/: every overlay rendered by ``kubectl kustomize`` and validated strictly for a pinned Kubernetes version."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.deploy.deploykit import (
    K8S,
    KUBERNETES_VERSION,
    Endpoint,
    by_kind,
    connection_allowed,
    container_env,
    declared_metrics,
    endpoints,
    env_example_keys,
    gpu_target,
    k8s_overlays,
    kubectl,
    run,
    tool,
    workloads,
)
from tests.deploy.test_compose import GATEWAY_PEERS, PIPELINE_PEERS, service_address

GPU_WORKLOADS = {"trainer", "inference"}  # the train-run Job only submits to the trainer: no GPU of its own


def kubernetes_validate(manifests: str) -> str:
    result = run([tool("kubernetes-validate", "pip install kubernetes-validate (dev extra)"), "--strict",
                  "-k", KUBERNETES_VERSION, "-"], input=manifests, check=False)
    output = result.stdout + result.stderr
    # A kind without a schema is only a warning for kubernetes-validate: here it fails (a typo in apiVersion/kind
    # would otherwise pass unchecked).
    missing = [line for line in output.splitlines() if "Couldn't find schema" in line]
    assert not missing, "\n".join(missing)
    assert result.returncode == 0, output
    return output


#: Custom resources kubernetes-validate has no schema for. What it can check of them is checked: each pod
#: template, as a v1 PodTemplate; the rest by test_the_pytorchjob_overlay_runs_one_run_over_two_nodes.
CUSTOM_KINDS = {("kubeflow.org/v1", "PyTorchJob")}


def pod_templates_of(custom: dict) -> list[dict]:
    """A PyTorchJob's pod templates as v1 PodTemplate objects (which kubernetes-validate knows)."""
    return [{"apiVersion": "v1", "kind": "PodTemplate",
             "metadata": {"name": f"{custom['metadata']['name']}-{replica.lower()}"}, "template": spec["template"]}
            for replica, spec in custom["spec"]["pytorchReplicaSpecs"].items()]


@pytest.mark.parametrize("overlay", k8s_overlays())
def test_overlay_renders_and_validates_strictly(overlay):
    rendered = run([kubectl(), "kustomize", str(K8S / "overlays" / overlay)]).stdout
    docs = [doc for doc in yaml.safe_load_all(rendered) if doc]
    custom = [doc for doc in docs if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS]
    known = [doc for doc in docs if doc not in custom] + [t for doc in custom for t in pod_templates_of(doc)]
    output = kubernetes_validate(yaml.safe_dump_all(known))
    assert output.count("passed for resource") >= 20 + 2 * len(custom), output


def test_validation_fails_on_unknown_fields_and_unknown_kinds():
    """The check is strict: an unexpected field and a kind without a schema both fail."""
    with pytest.raises(AssertionError, match="restartPolcy|Additional properties"):
        kubernetes_validate("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  restartPolcy: Never\n"
                            "  containers: [{name: x, image: 'busybox:1.36'}]\n")
    with pytest.raises(AssertionError, match="Couldn't find schema"):
        kubernetes_validate("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: x}\n")


def test_overlays_exist():
    assert {"gpu", "gpu-vllm", "gpu-multi", "gpu-pytorchjob", "cpu"} <= set(k8s_overlays())


def test_the_multi_node_overlay_runs_one_trainer_per_gpu_node(rendered_k8s):
    """gpu-multi is the gpu overlay with the trainer scaled out: at least two replicas, never two on one node,
    each with a model cache of its own (the shared claim is ReadWriteOnce); nothing else changes."""
    gpu, multi = workloads(rendered_k8s["gpu"]), workloads(rendered_k8s["gpu-multi"])
    assert {name for name in gpu if gpu[name] != multi[name]} == {"trainer"}
    trainer = by_kind(rendered_k8s["gpu-multi"], "Deployment")["trainer"]
    assert trainer["spec"]["replicas"] >= 2
    pod = trainer["spec"]["template"]["spec"]
    (rule,) = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert rule["topologyKey"] == "kubernetes.io/hostname"
    assert rule["labelSelector"]["matchLabels"] == trainer["spec"]["selector"]["matchLabels"]
    cache = next(v for v in pod["volumes"] if v["name"] == "cache")
    assert "persistentVolumeClaim" not in cache and cache["ephemeral"]["volumeClaimTemplate"]


def test_the_pytorchjob_overlay_runs_one_run_over_two_nodes(rendered_k8s):
    """gpu-pytorchjob adds one PyTorchJob: a master and a worker pod on different GPU nodes, each running the
    trainer's node entry on a spec the trainer accepts, with as many GPUs as the spec's processes per node."""
    from emotune.services.trainer.spec import TrainingSpec

    docs = rendered_k8s["gpu-pytorchjob"]
    (job,) = [doc for doc in docs if doc["kind"] == "PyTorchJob"]
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert {name: r["replicas"] for name, r in replicas.items()} == {"Master": 1, "Worker": 1}
    assert job["spec"]["runPolicy"]["backoffLimit"] == 0
    spec_doc = by_kind(docs, "ConfigMap")["big-train-spec"]["data"]["spec.yaml"]
    spec = TrainingSpec.parse(yaml.safe_load(spec_doc), "big-train-spec")
    assert spec.backend == "hf" and spec.processes > 1
    for name, replica in replicas.items():
        assert replica["restartPolicy"] == "Never"
        pod = replica["template"]["spec"]
        (container,) = pod["containers"]
        assert container["name"] == "pytorch", name  # the container the training operator configures
        assert container["command"][:3] == ["python", "-m", "emotune.services.trainer.nodejob"]
        assert container["image"] == "emotune/trainer-gpu:0.1.0", container["image"]
        gpus = {container["resources"][k]["nvidia.com/gpu"] for k in ("requests", "limits")}
        assert gpus == {str(spec.processes)} == {job["spec"]["nprocPerNode"]}, name
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        (rule,) = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert rule["topologyKey"] == "kubernetes.io/hostname"
        labels = replica["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "emotune"  # MinIO lets it in
        peers = by_kind(docs, "NetworkPolicy")["big-run-peers"]["spec"]
        assert peers["podSelector"]["matchLabels"].items() <= labels.items()  # the nodes reach each other
    assert (K8S.parent / "emotune" / "services" / "trainer" / "nodejob.py").is_file()


def test_gpu_node_selection_only_in_the_gpu_overlay(rendered_k8s):
    for overlay, docs in rendered_k8s.items():
        for name, pod in workloads(docs).items():
            container = pod["containers"][0]
            gpus = container["resources"].get("limits", {}).get("nvidia.com/gpu")
            if overlay.startswith("gpu") and name in GPU_WORKLOADS:
                assert gpus == "1", f"{overlay}: {name}: no nvidia.com/gpu limit"
                assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
                assert gpu_target(container["image"].split(":")[0].removeprefix("emotune/")), f"{overlay}: {name}"
            else:
                assert gpus is None and "nodeSelector" not in pod, f"{overlay}: {name} asks for a GPU node"
                if name in GPU_WORKLOADS:
                    assert container["image"].split(":")[0].endswith("-cpu")


def test_the_vllm_overlay_changes_only_the_inference_engine(rendered_k8s):
    """gpu-vllm is the gpu overlay with inference on the inference-vllm image and the vllm engine."""
    lmdeploy, vllm = workloads(rendered_k8s["gpu"]), workloads(rendered_k8s["gpu-vllm"])
    assert {name for name in lmdeploy if lmdeploy[name] != vllm[name]} == {"inference"}
    engines = {overlay: {item["name"]: item.get("value") for item in pods["inference"]["containers"][0]["env"]}
               for overlay, pods in (("gpu", lmdeploy), ("gpu-vllm", vllm))}
    assert engines["gpu"]["EMOTUNE_INFERENCE_ENGINE"] == "lmdeploy"
    assert engines["gpu-vllm"]["EMOTUNE_INFERENCE_ENGINE"] == "vllm"
    assert vllm["inference"]["containers"][0]["image"].startswith("emotune/inference-vllm:")
    assert vllm["inference"]["volumes"] == lmdeploy["inference"]["volumes"]  # /dev/shm, the model cache


def test_pods_are_hardened_and_sized(rendered_k8s):
    for docs in rendered_k8s.values():
        for name, pod in workloads(docs).items():
            assert pod["securityContext"]["runAsNonRoot"] is True, f"{name}: may run as root"
            assert pod.get("automountServiceAccountToken") is False, f"{name}: mounts an API token it never uses"
            for container in pod["containers"]:
                security = container["securityContext"]
                assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"]
                assert security["readOnlyRootFilesystem"] is True, f"{name}: writable root filesystem"
                assert {"cpu", "memory"} <= set(container["resources"]["requests"]), f"{name}: no requests"
                assert {"cpu", "memory"} <= set(container["resources"]["limits"]), f"{name}: no limits"
                image = container["image"]
                assert re.search(r":[^:/]*\d", image) and not image.endswith(":latest"), f"{name}: {image} unpinned"


def test_grpc_services_use_native_grpc_probes(rendered_k8s, services):
    for docs in rendered_k8s.values():
        pods = workloads(docs)
        for service in services.values():
            if service.grpc_port is None:
                continue
            container = pods[service.name]["containers"][0]
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert container[probe]["grpc"]["port"] == service.grpc_port, f"{service.name}: {probe}"


def test_network_policy_keeps_grpc_internal(rendered_k8s, services):
    for docs in rendered_k8s.values():
        policies = by_kind(docs, "NetworkPolicy")
        deny = [p for p in policies.values() if p["spec"]["podSelector"] == {} and "ingress" not in p["spec"]]
        assert deny, "no default-deny ingress policy"
        pods = {name: doc["spec"]["template"]["metadata"]["labels"] for name, doc in by_kind(docs, "Deployment").items()}
        for service in services.values():
            labels = pods[service.name]
            allowing = [p for p in policies.values() if p["spec"].get("ingress")
                        and all(labels.get(k) == v for k, v in p["spec"]["podSelector"].get("matchLabels", {}).items())
                        and _matches_expressions(labels, p["spec"]["podSelector"].get("matchExpressions", []))]
            assert allowing, f"{service.name}: no policy lets any traffic in"
            for policy in allowing:
                for rule in policy["spec"]["ingress"]:
                    ports = {p["port"] for p in rule.get("ports", [])}
                    if "grpc" in ports or service.grpc_port in ports:
                        assert rule.get("from"), f"{policy['metadata']['name']}: gRPC open to every source"
                        for source in rule["from"]:
                            assert "ipBlock" not in source and "namespaceSelector" not in source


def _matches_expressions(labels: dict[str, str], expressions: list[dict]) -> bool:
    return all(labels.get(e["key"]) in e["values"] if e["operator"] == "In" else False for e in expressions)


def test_autoscaling_ingress_storage_and_training(rendered_k8s):
    for overlay, docs in rendered_k8s.items():
        hpas = by_kind(docs, "HorizontalPodAutoscaler")
        assert {"gateway", "inference"} <= {h["spec"]["scaleTargetRef"]["name"] for h in hpas.values()}
        for hpa in hpas.values():
            for metric in hpa["spec"]["metrics"]:
                if metric["type"] == "Pods":  # a custom metric must be one the service exports
                    assert metric["pods"]["metric"]["name"] in declared_metrics(), f"{overlay}: {metric}"
        backends = {path["backend"]["service"]["name"] for ing in by_kind(docs, "Ingress").values()
                    for rule in ing["spec"]["rules"] for path in rule["http"]["paths"]}
        assert backends == {"gateway", "ui"}, f"{overlay}: the ingress exposes {backends}"
        minio = by_kind(docs, "StatefulSet")["minio"]
        assert minio["spec"]["volumeClaimTemplates"], "MinIO without a persistent volume"
        assert by_kind(docs, "Job").get("minio-init"), "no bucket-init Job"
        trainer = by_kind(docs, "Deployment")["trainer"]
        assert trainer["spec"]["strategy"]["type"] == "Recreate"
        # a training run as a Job of its own: the suspended template `kubectl create job --from` copies
        template = by_kind(docs, "CronJob")["train-run"]
        assert template["spec"]["suspend"] is True
        container = template["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
        assert container["image"].startswith("emotune/trainer") and container["command"][:5] == [
            "emotune", "train", "run", "--remote", "$(EMOTUNE_TRAINER_ADDR)"]  # the trainer owns the run


def secret_keys(docs: list[dict]) -> dict[str, bool]:
    """Keys of emotune-secrets the manifests use -> whether the pod starts without them (optional)."""
    keys: dict[str, bool] = {}

    def note(key: str, optional: bool) -> None:
        keys[key] = keys.get(key, True) and optional

    for pod in workloads(docs).values():
        for container in pod["containers"]:
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"] == "emotune-secrets":
                    note(ref["key"], ref.get("optional", False))
        for volume in pod.get("volumes", []):
            sources = volume.get("projected", {}).get("sources", [])
            secrets = [s["secret"] for s in sources if "secret" in s]
            if "secret" in volume:
                secrets.append({**volume["secret"], "name": volume["secret"]["secretName"]})
            for secret in secrets:
                if secret["name"] == "emotune-secrets":
                    for item in secret["items"]:
                        note(item["key"], secret.get("optional", False))
    return keys


def test_the_secret_is_what_env_example_describes(rendered_k8s):
    """`kubectl create secret generic emotune-secrets --from-env-file=.env` provides every key the pods need."""
    required, optional = env_example_keys()
    for overlay, docs in rendered_k8s.items():
        for key, is_optional in secret_keys(docs).items():
            assert key in required + optional, f"{overlay}: the pods read {key}, which .env.example does not list"
            if not is_optional:
                assert key in required, f"{overlay}: pods need {key}, but .env.example marks it optional"


# Connections the services make (source workload, destination workload, named port of the destination).
REQUIRED_FLOWS = [
    *(("gateway", peer, "grpc") for peer in GATEWAY_PEERS),
    *(("pipeline", peer, "grpc") for peer in PIPELINE_PEERS),
    *((name, "minio", "s3") for name in ("gateway", "pipeline", "datagen", "validator", "trainer", "inference",
                                        "train-run", "minio-init")),
    ("trainer", "validator", "grpc"),  # style scores of checkpoints
    ("train-run", "trainer", "grpc"),
    ("datagen", "gateway", "http"),  # the default teacher is emotune's own gateway
    ("ui", "gateway", "http"),
]
MONITORING = Endpoint("monitoring", {"app.kubernetes.io/name": "prometheus"})
OUTSIDE = Endpoint(None)  # the ingress controller, a load balancer, the internet
ELSEWHERE = Endpoint("default", {"app": "anything"})  # another namespace of the cluster


def test_gateway_and_pipeline_run_replicated(rendered_k8s):
    """Both are stateless towards their callers (the pipeline's jobs are leased in the object store): two replicas
    at least, never scaled below that, and a disruption budget keeps one up during node drains."""
    for overlay, docs in rendered_k8s.items():
        deployments = by_kind(docs, "Deployment")
        autoscalers = {hpa["spec"]["scaleTargetRef"]["name"]: hpa
                       for hpa in by_kind(docs, "HorizontalPodAutoscaler").values()}
        budgets = by_kind(docs, "PodDisruptionBudget")
        for name in ("gateway", "pipeline"):
            assert deployments[name]["spec"]["replicas"] >= 2, f"{overlay}: {name} runs one replica"
            if name in autoscalers:
                assert autoscalers[name]["spec"]["minReplicas"] >= 2, f"{overlay}: {name} scales down to one"
            assert budgets[name]["spec"]["minAvailable"] >= 1
            assert budgets[name]["spec"]["selector"] == deployments[name]["spec"]["selector"]


def test_the_gateway_and_the_pipeline_know_their_peers(rendered_k8s):
    """The pipeline is told where every service it drives is; the gateway only where the pipeline and inference
    are (it runs no job itself)."""
    for overlay, docs in rendered_k8s.items():
        pods = workloads(docs)
        env = {name: container_env(pods[name]["containers"][0], docs) for name in ("gateway", "pipeline")}
        for peer in (*PIPELINE_PEERS, "pipeline"):
            assert env["pipeline"].get(f"EMOTUNE_{peer.upper()}_ADDR") == service_address(peer), f"{overlay}: {peer}"
        addresses = {k: v for k, v in env["gateway"].items() if re.fullmatch(r"EMOTUNE_\w+_ADDR", k)}
        assert addresses == {f"EMOTUNE_{peer.upper()}_ADDR": service_address(peer) for peer in GATEWAY_PEERS}, (
            f"{overlay}: the gateway is told {addresses}")
        assert pods["pipeline"]["containers"][0]["image"].startswith("emotune/pipeline:")


def test_network_policies_let_the_services_talk_and_nothing_else_in(rendered_k8s):
    """The policies, evaluated as Kubernetes does, allow every connection the services make, Prometheus (from the
    monitoring namespace) to scrape every metrics port (MinIO's: its S3 port), and no gRPC or S3 connection from
    outside the namespace."""
    for overlay, docs in rendered_k8s.items():
        policies = list(by_kind(docs, "NetworkPolicy").values())
        pods = endpoints(docs)
        for source, destination, port in REQUIRED_FLOWS:
            assert connection_allowed(policies, pods[source], pods[destination], port), (
                f"{overlay}: {source} cannot reach {destination}:{port}")
        for name, pod in pods.items():
            if "metrics" in pod.ports:
                assert connection_allowed(policies, MONITORING, pod, "metrics"), f"{overlay}: {name} not scrapable"
            # MinIO serves its metrics on the S3 port: Prometheus may open that one, never a gRPC port
            for port, strangers in (("grpc", (OUTSIDE, ELSEWHERE, MONITORING)), ("s3", (OUTSIDE, ELSEWHERE))):
                if port in pod.ports:
                    for stranger in strangers:
                        assert not connection_allowed(policies, stranger, pod, port), (
                            f"{overlay}: {stranger} reaches {name}:{port}")
        for name in ("gateway", "ui"):
            assert connection_allowed(policies, OUTSIDE, pods[name], "http"), f"{overlay}: {name} not public"
        assert connection_allowed(policies, MONITORING, pods["minio"], "s3"), f"{overlay}: MinIO not scrapable"


def test_grpc_ports_admit_only_their_callers(rendered_k8s):
    """Least privilege inside the namespace too: a gRPC port admits the workloads that call that service and no
    other (the public UI reaches no gRPC service; the gateway cannot drive the trainer behind the pipeline)."""
    callers = {(source, destination) for source, destination, port in REQUIRED_FLOWS if port == "grpc"}
    for overlay, docs in rendered_k8s.items():
        policies = list(by_kind(docs, "NetworkPolicy").values())
        pods = endpoints(docs)
        for destination, pod in pods.items():
            if "grpc" not in pod.ports:
                continue
            for source in pods.keys() - {destination}:
                allowed = connection_allowed(policies, pods[source], pod, "grpc")
                assert allowed == ((source, destination) in callers), (
                    f"{overlay}: {source} -> {destination}:grpc is {'allowed' if allowed else 'denied'}")


def test_network_policy_evaluation_is_not_vacuous(rendered_k8s):
    """Without the pipeline's gRPC policy the gateway cannot reach the pipeline: the default deny holds."""
    docs = rendered_k8s["cpu"]
    policies = [p for name, p in by_kind(docs, "NetworkPolicy").items() if name != "grpc-pipeline"]
    pods = endpoints(docs)
    assert not connection_allowed(policies, pods["gateway"], pods["pipeline"], "grpc")
    assert connection_allowed(policies, pods["gateway"], pods["minio"], "s3")


def test_metrics_ports_are_announced_to_prometheus(rendered_k8s):
    """Every Deployment serving /metrics (a ``metrics`` port; the gateway's too, never its HTTP port) carries the
    prometheus.io annotations with that port, the pipeline's replicas included."""
    for overlay, docs in rendered_k8s.items():
        announced = set()
        for name, deployment in by_kind(docs, "Deployment").items():
            template = deployment["spec"]["template"]
            ports = {p["name"]: p["containerPort"] for c in template["spec"]["containers"]
                     for p in c.get("ports", [])}
            port = ports.get("metrics")
            if port is None:
                continue
            annotations = template["metadata"].get("annotations", {})
            assert annotations.get("prometheus.io/scrape") == "true", f"{overlay}: {name} is not scraped"
            assert annotations.get("prometheus.io/port") == str(port), f"{overlay}: {name} scraped on the wrong port"
            announced.add(name)
        assert {"gateway", "pipeline", "inference"} <= announced, overlay
