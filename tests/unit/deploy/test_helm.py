"""deploy/helm/sieve: rendered by Helm's own engine (the Helm v4 SDK bundled in the ``helm-python-sdk``
wheel, offline) for each values profile, and every rendered object validated against the Kubernetes JSON
schemas (``kubernetes-validate``, strict: unknown fields fail). Then what the schemas cannot say: the chart
contains no secret, Sieve's variables are declared by the settings classes, readiness gates traffic, GPU pods
ask for one GPU, the autoscalers, disruption budgets, Services and Ingress point at objects the chart makes,
and the commands are commands of the ``sieve`` CLI.

The Milvus dependency is not fetched offline: Helm renders the chart without it (its objects come from the
official chart at install time)."""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import kubernetes_validate.utils as kv_utils
import pytest
import yaml

from api import metrics
from tests.unit.deploy.manifests import ROOT, SECRET_NAME, check_cli, unknown_sieve_vars

CHART = ROOT / "deploy" / "helm" / "sieve"
KUBERNETES = "1.30.0"  # the oldest Kubernetes the chart is checked against (Chart.yaml: >= 1.27)

# The schema files are read once, not once per object.
kv_utils.schema_contents = functools.lru_cache(maxsize=None)(kv_utils.schema_contents)


def merged(*layers: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of values files: later layers win, maps merge key by key."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merged(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


def values_file(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((CHART / name).read_text()) or {})


PROFILES: dict[str, dict[str, Any]] = {
    "default": {},
    "small": values_file("values-small.yaml"),
    "100m": values_file("values-100m.yaml"),
    # The other branches of the templates: rerank servers by name, uploads on a shared volume, an external
    # Redis and Milvus, GPU workers.
    "variants": {
        "rerank": {"workload": "StatefulSet", "hpa": {"maxReplicas": 3}},
        "blobStore": {"type": "local"},
        "redis": {"enabled": False},
        "milvus": {"enabled": False},
        "externalMilvus": {"uri": "http://milvus.example:19530", "tokenKey": "milvus-token"},
        "models": {"existingClaim": "sieve-models"},
        "workerGpu": {"enabled": True},
        "api": {"hpa": {"enabled": False}},
    },
}


@functools.cache
def rendered(profile: str) -> tuple[dict[str, Any], ...]:
    with helm.Chart.load(str(CHART)) as chart:
        files = chart.render(PROFILES[profile], name="sieve", namespace="sieve")
    objects = []
    for path, text in sorted(files.items()):
        if path.endswith(".yaml"):
            objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return tuple(objects)


def of_kind(objects: tuple[dict[str, Any], ...], *kinds: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in kinds]


def containers(objects: tuple[dict[str, Any], ...]) -> Iterator[tuple[str, dict[str, Any]]]:
    for o in of_kind(objects, "Deployment", "StatefulSet", "Job"):
        for c in o["spec"]["template"]["spec"]["containers"]:
            yield o["metadata"]["name"], c


def workload(objects: tuple[dict[str, Any], ...], name: str) -> dict[str, Any]:
    (found,) = [o for o in of_kind(objects, "Deployment", "StatefulSet") if o["metadata"]["name"] == name]
    return found


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.fixture(params=sorted(PROFILES))
def objects(request: pytest.FixtureRequest) -> tuple[dict[str, Any], ...]:
    return rendered(request.param)


def test_every_object_is_valid_kubernetes(objects: tuple[dict[str, Any], ...]) -> None:
    errors = []
    for o in objects:
        try:
            kubernetes_validate.validate(o, KUBERNETES, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{o['kind']}/{o['metadata']['name']}: {path}: {exc.message}")
    assert not errors, errors


def test_the_schema_check_catches_a_wrong_field() -> None:
    deployment = copy.deepcopy(workload(rendered("default"), "sieve-api"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readynessProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)


def test_the_chart_contains_no_secret_and_reads_secrets_from_one(objects: tuple[dict[str, Any], ...]) -> None:
    assert not of_kind(objects, "Secret", "ConfigMap")
    for name, container in containers(objects):
        for var, entry in env_of(container).items():
            if SECRET_NAME.search(var):
                assert "secretKeyRef" in entry.get("valueFrom", {}), (name, var, entry)


def test_sieve_variables_are_declared_by_the_settings_classes(objects: tuple[dict[str, Any], ...]) -> None:
    names = set()
    for _, container in containers(objects):
        env = container.get("env", [])
        assert len({e["name"] for e in env}) == len(env), [e["name"] for e in env]  # no name twice
        names |= {e["name"] for e in env}
    assert not unknown_sieve_vars(names)


def test_readiness_gates_traffic_and_gpu_pods_ask_for_one_gpu(objects: tuple[dict[str, Any], ...]) -> None:
    served = {"sieve-api": "/ready", "sieve-rerank": "/ready"}
    for o in of_kind(objects, "Deployment", "StatefulSet"):
        name = o["metadata"]["name"]
        (container,) = o["spec"]["template"]["spec"]["containers"]
        if name in served:
            assert container["readinessProbe"]["httpGet"]["path"] == served[name], name
            assert container["startupProbe"]["failureThreshold"] >= 60, name  # warm-up: minutes
        limits = container.get("resources", {}).get("limits", {})
        if name in ("sieve-rerank", "sieve-worker-gpu"):
            assert limits.get("nvidia.com/gpu") == 1, name
        else:
            assert "nvidia.com/gpu" not in limits, name


def test_autoscalers_budgets_services_and_ingress_point_at_the_chart_s_pods(
    objects: tuple[dict[str, Any], ...],
) -> None:
    workloads = {(o["kind"], o["metadata"]["name"]): o for o in of_kind(objects, "Deployment", "StatefulSet")}
    pod_labels = [o["spec"]["template"]["metadata"]["labels"] for o in workloads.values()]

    def selects_pods(selector: dict[str, str]) -> bool:
        return any(selector.items() <= labels.items() for labels in pod_labels)

    for hpa in of_kind(objects, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) in workloads, target
        assert "replicas" not in workloads[(target["kind"], target["name"])]["spec"]  # the HPA owns it
    for pdb in of_kind(objects, "PodDisruptionBudget"):
        assert selects_pods(pdb["spec"]["selector"]["matchLabels"]), pdb["metadata"]["name"]
    services = {s["metadata"]["name"]: s for s in of_kind(objects, "Service")}
    for service in services.values():
        assert selects_pods(service["spec"]["selector"]), service["metadata"]["name"]
    for ingress in of_kind(objects, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                ports = [p["name"] for p in services[backend["name"]]["spec"]["ports"]]
                assert backend["port"]["name"] in ports
    for o in workloads.values():
        if o["kind"] == "StatefulSet":
            assert o["spec"]["serviceName"] in services, o["metadata"]["name"]


def test_commands_are_commands_of_the_cli(objects: tuple[dict[str, Any], ...]) -> None:
    commands = [c["command"] for _, c in containers(objects) if c.get("command", [None])[0] == "sieve"]
    assert any(argv[1] == "serve" for argv in commands)
    for argv in commands:
        check_cli(argv)


def test_the_rerank_autoscaler_follows_the_inference_queue_metric() -> None:
    (hpa,) = [
        h
        for h in of_kind(rendered("default"), "HorizontalPodAutoscaler")
        if "rerank" in h["metadata"]["name"]
    ]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "sieve_inference_queue_depth"
    assert metrics.QUEUE_DEPTH._name == "sieve_inference_queue_depth"  # the gauge the rerank server exports
    (api_hpa,) = [
        h for h in of_kind(rendered("default"), "HorizontalPodAutoscaler") if "api" in h["metadata"]["name"]
    ]
    assert api_hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def test_rerank_servers_by_name_are_each_listed_for_the_api() -> None:
    objects = rendered("variants")
    (api,) = [c for name, c in containers(objects) if name == "sieve-api"]
    urls = env_of(api)["RERANK_URLS"]["value"].split(",")
    assert urls == [f"http://sieve-rerank-{i}.sieve-rerank-headless:8101" for i in range(3)]
    assert env_of(api)["RERANK_URL"]["value"] == urls[0]
    default_api = [c for name, c in containers(rendered("default")) if name == "sieve-api"][0]
    assert env_of(default_api)["RERANK_URLS"]["value"] == "http://sieve-rerank:8101"


def test_stores_are_where_the_values_say() -> None:
    (api,) = [c for name, c in containers(rendered("default")) if name == "sieve-api"]
    env = env_of(api)
    assert env["RETRIEVAL_MILVUS_URI"]["value"] == "http://sieve-milvus:19530"  # the Milvus chart's Service
    assert env["INGEST_REDIS_URL"]["value"] == "redis://:$(REDIS_PASSWORD)@sieve-redis:6379/0"
    assert list(env).index("REDIS_PASSWORD") < list(env).index("INGEST_REDIS_URL")  # $(...) needs it first
    assert (
        env["INGEST_BLOB_STORE"]["value"] == "s3"
        and env["INGEST_S3_ENDPOINT_URL"]["value"] == "http://sieve-minio:9000"
    )
    (api,) = [c for name, c in containers(rendered("variants")) if name == "sieve-api"]
    env = env_of(api)
    assert env["RETRIEVAL_MILVUS_URI"]["value"] == "http://milvus.example:19530"
    assert "secretKeyRef" in env["INGEST_REDIS_URL"]["valueFrom"]
    assert env["INGEST_DATA_DIR"]["value"] == "/data/files" and "INGEST_BLOB_STORE" not in env
    claims = [o for o in rendered("variants") if o["kind"] == "PersistentVolumeClaim"]
    assert [c["spec"]["accessModes"] for c in claims] == [["ReadWriteMany"]]


def test_the_chart_depends_on_the_official_milvus_chart() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    (dependency,) = chart["dependencies"]
    assert dependency["name"] == "milvus"
    assert dependency["repository"] == "https://zilliztech.github.io/milvus-helm/"
    assert dependency["condition"] == "milvus.enabled"


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_helm_lint_finds_no_error(profile: str, tmp_path: Path) -> None:
    report = helm.lint(str(CHART), PROFILES[profile], kube_version=f"v{KUBERNETES}")
    errors = [m for m in report["messages"] if m["severity"] >= 3] + report["errors"]
    assert not errors, errors
