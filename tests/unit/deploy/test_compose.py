"""deploy/compose/compose.yaml: valid against the Compose Specification's schema (vendored, offline), its
Sieve variables declared by the settings classes, secrets only from the environment, start order by
readiness, one GPU per GPU process, and commands the ``sieve`` CLI takes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.unit.deploy.manifests import (
    ROOT,
    SECRET_NAME,
    CliArgsError,
    InterpolationError,
    check_cli,
    declared_env,
    interpolate,
    read_env_file,
    unknown_sieve_vars,
    variables,
)

COMPOSE = ROOT / "deploy" / "compose"
SCHEMA = Path(__file__).parent / "schemas" / "compose-spec.json"
SECRETS = (
    "REDIS_PASSWORD",
    "MINIO_ROOT_USER",
    "MINIO_ROOT_PASSWORD",
    "API_KEYS",
    "API_ADMIN_KEY",
    "RERANK_SERVER_TOKEN",
)


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return dict(yaml.safe_load((COMPOSE / "compose.yaml").read_text()))


@pytest.fixture(scope="module")
def example_env() -> dict[str, str]:
    return read_env_file(COMPOSE / ".env.example")


@pytest.fixture(scope="module")
def filled_env(example_env: dict[str, str]) -> dict[str, str]:
    """The example with every secret filled in, as an operator would."""
    return {**example_env, **{name: f"{name.lower()}-0123456789abcdef" for name in SECRETS}}


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any], filled_env: dict[str, str]) -> dict[str, Any]:
    return dict(interpolate(raw, filled_env))  # type: ignore[arg-type] # a dict in, a dict out


def environment(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # KEY=value items
        return dict(item.partition("=")[::2] for item in env)
    return dict(env)


def test_the_file_is_valid_against_the_compose_schema(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, errors


def test_the_schema_check_catches_a_wrong_key(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["api"]["helthcheck"] = broken["services"]["api"].pop("healthcheck")
    assert list(jsonschema.validators.validator_for(schema)(schema).iter_errors(broken))


@pytest.mark.parametrize("secret", SECRETS)
def test_a_missing_secret_stops_the_file(
    raw: dict[str, Any], filled_env: dict[str, str], secret: str
) -> None:
    with pytest.raises(InterpolationError, match=secret):
        interpolate(raw, {**filled_env, secret: ""})


def test_the_example_env_leaves_every_secret_empty(example_env: dict[str, str], raw: dict[str, Any]) -> None:
    assert {name: example_env.get(name) for name in SECRETS} == dict.fromkeys(SECRETS, "")
    with pytest.raises(InterpolationError):
        interpolate(raw, example_env)  # as shipped, `docker compose up` refuses to start


def test_secrets_come_only_from_the_environment(raw: dict[str, Any]) -> None:
    """Every secret-like variable of a service is an interpolation that refuses an empty value: never a
    literal in the file."""
    literal = []
    for name, service in raw["services"].items():
        for key, value in environment(service).items():
            if SECRET_NAME.search(key) and not re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", str(value)):
                literal.append(f"{name}.{key}={value!r}")
    assert not literal, literal


def test_sieve_variables_are_declared_by_the_settings_classes(
    raw: dict[str, Any], example_env: dict[str, str]
) -> None:
    names = set(example_env) | variables(raw)
    for service in raw["services"].values():
        names |= set(environment(service))
    assert not unknown_sieve_vars(names)


def test_the_cross_check_catches_a_renamed_setting() -> None:
    assert unknown_sieve_vars(["RERANK_BACKEND", "RERANK_BACKENDS", "API_PORT", "INGEST_DATADIR"]) == [
        "INGEST_DATADIR",
        "RERANK_BACKENDS",
    ]
    _, prefixes = declared_env()
    assert set(prefixes) >= {"API_", "INGEST_", "RETRIEVAL_", "RERANK_"}


def test_services_wait_for_the_readiness_of_what_they_need(compose: dict[str, Any]) -> None:
    services = compose["services"]
    one_shot = {name for name, s in services.items() if "restart" not in s}
    assert one_shot == {"minio-init"}
    for name, service in services.items():
        if name not in one_shot:
            assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
        for needed, spec in (service.get("depends_on") or {}).items():
            want = "service_completed_successfully" if needed in one_shot else "service_healthy"
            assert spec["condition"] == want, (name, needed)
            assert needed in services, (name, needed)


def test_health_checks_ask_for_readiness(compose: dict[str, Any]) -> None:
    services = compose["services"]

    def probe(name: str) -> str:
        return " ".join(services[name]["healthcheck"]["test"])

    assert "/ready" in probe("api") and "/ready" in probe("rerank-0") and "/ready" in probe("rerank-1")
    assert "redis-cli ping" in probe("redis")
    assert "/healthz" in probe("milvus")


def test_redis_keeps_an_append_only_file_behind_a_password(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and '--requirepass "$REDIS_PASSWORD"' in command
    assert environment(redis)["REDISCLI_AUTH"]  # the health check's redis-cli authenticates


def test_each_gpu_process_has_one_gpu_of_its_own(compose: dict[str, Any]) -> None:
    devices: list[str] = []
    gpu_services = [n for n, s in compose["services"].items() if "gpu" in s.get("profiles", [])]
    assert sorted(gpu_services) == ["rerank-0", "rerank-1", "worker-gpu-0", "worker-gpu-1"]
    for name in gpu_services:
        service = compose["services"][name]
        (reservation,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert reservation["capabilities"] == ["gpu"] and len(reservation["device_ids"]) == 1, name
        devices += reservation["device_ids"]
        if name.startswith("worker"):
            assert service["command"][:4] == ["sieve", "worker", "--pool", "solo"], name
            assert service["command"][-2:] == ["--concurrency", "1"], name
    assert len(set(devices)) == len(devices), devices


def test_rerank_servers_and_the_api_share_one_token(
    compose: dict[str, Any], filled_env: dict[str, str]
) -> None:
    services = compose["services"]
    token = filled_env["RERANK_SERVER_TOKEN"]
    for name in ("api", "rerank-0", "rerank-1"):
        assert environment(services[name])["RERANK_SERVER_TOKEN"] == token, name
    urls = environment(services["api"])["RERANK_URLS"].split(",")
    assert urls == ["http://rerank-0:8101", "http://rerank-1:8101"]
    for name in ("rerank-0", "rerank-1"):
        assert services[name]["command"][-1] == "8101"


def test_sieve_commands_are_commands_of_the_cli(compose: dict[str, Any]) -> None:
    commands = [s["command"] for s in compose["services"].values() if s.get("command", [None])[0] == "sieve"]
    assert len(commands) == 6  # api, worker-cpu, two GPU workers, two rerank servers
    for argv in commands:
        check_cli(argv)
    with pytest.raises(CliArgsError, match="pools"):
        check_cli(["sieve", "worker", "--pools", "solo"])


def test_the_proxy_sends_to_the_api_replicas(compose: dict[str, Any]) -> None:
    nginx = (COMPOSE / "nginx.conf").read_text()
    api = compose["services"]["api"]
    port = api["command"][api["command"].index("--port") + 1]
    assert re.search(rf"server api:{port} resolve", nginx)
    assert int(api["deploy"]["replicas"]) >= 2
    assert "ports" not in api  # only the proxy is published
    published = [n for n, s in compose["services"].items() if s.get("ports")]
    assert published == ["proxy"]
