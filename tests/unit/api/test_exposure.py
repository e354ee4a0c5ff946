"""Safe defaults: the API refuses a non-loopback address with placeholder or short keys (API_KEYS,
API_ADMIN_KEY); the rerank server needs RERANK_SERVER_TOKEN off loopback, checks it when set, and the remote
backend sends it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from api.cli import app as cli
from api.rerank_server import RerankServerSettings, create_rerank_app
from api.rerank_server import check_exposure as check_rerank_exposure
from api.settings import ApiSettings, UnsafeSettingsError, check_exposure, is_loopback, weak_secret
from reranking import RerankSettings, make_reranker
from reranking.backends.remote import RemoteReranker
from reranking.errors import RerankUnavailableError
from tests.support import compat_harness as harness
from tests.support.fakes import FakeReranker

STRONG = "kq3V9xYtR2mZ8wLp4sNc"  # 20 characters, no placeholder
TOKEN = "rT6uW1oP9aS3dF5gH7jK"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("api.example.com", False),
    ],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    "secret",
    [
        "changeme",
        "admin",
        "secret",
        "test",
        "short-key",
        "changeme-changeme-1",
        "CHANGEME_123456789",
        "my-secret-api-key-2024",
        "1234567890123456",
        "aaaaaaaaaaaaaaaaaaaa",
        "placeholder-token-xyz",
    ],
)
def test_weak_secrets(secret: str) -> None:
    assert weak_secret(secret) is not None


def test_a_strong_secret_passes() -> None:
    assert weak_secret(STRONG) is None and weak_secret(TOKEN) is None


def test_weak_keys_are_refused_off_loopback_naming_the_setting_not_the_key() -> None:
    weak = ApiSettings(keys={"changeme": "acme", STRONG: "other"})
    check_exposure(weak, "127.0.0.1")  # loopback: anything goes
    with pytest.raises(UnsafeSettingsError) as refused:
        check_exposure(weak, "0.0.0.0")
    message = str(refused.value)
    assert "API_KEYS" in message and "'acme'" in message and "changeme" not in message
    assert "\n" not in message
    with pytest.raises(UnsafeSettingsError, match="API_ADMIN_KEY is 5 characters"):
        check_exposure(ApiSettings(keys={STRONG: "acme"}, admin_key="admin"), "0.0.0.0")
    check_exposure(ApiSettings(keys={STRONG: "acme"}, admin_key=TOKEN), "0.0.0.0")
    check_exposure(ApiSettings(), "0.0.0.0")  # no key at all: every request is refused anyway


def test_the_app_refuses_to_start_on_a_public_host_with_weak_keys(tmp_path: Path) -> None:
    from ingestion.settings import IngestSettings

    settings = harness.settings(IngestSettings(data_dir=tmp_path), host="0.0.0.0", keys={"test": "t1"})
    app = create_app(settings, resources_factory=harness.resources_factory(None))
    with pytest.raises(UnsafeSettingsError, match="API_KEYS"), TestClient(app):
        pass


@pytest.fixture
def no_uvicorn(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: runs.append(kw))
    return runs


def test_sieve_serve_refuses_in_one_line(no_uvicorn: list[dict[str, Any]]) -> None:
    env = {"API_KEYS": json.dumps({"changeme": "acme"}), "API_ADMIN_KEY": ""}
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0"], env=env)
    assert result.exit_code == 2 and no_uvicorn == []
    assert result.output.strip().count("\n") == 0 and "API_KEYS" in result.output
    ok = CliRunner().invoke(cli, ["serve", "--host", "127.0.0.1", "--port", "8123"], env=env)
    assert ok.exit_code == 0 and no_uvicorn == [{"host": "127.0.0.1", "port": 8123, "log_level": "info"}]


def test_the_rerank_server_needs_a_token_off_loopback(no_uvicorn: list[dict[str, Any]]) -> None:
    check_rerank_exposure(RerankServerSettings(host="127.0.0.1"))  # optional on loopback
    with pytest.raises(UnsafeSettingsError, match="RERANK_SERVER_TOKEN is not set"):
        check_rerank_exposure(RerankServerSettings(host="0.0.0.0"))
    with pytest.raises(UnsafeSettingsError, match="RERANK_SERVER_TOKEN is a placeholder"):
        check_rerank_exposure(
            RerankServerSettings(host="0.0.0.0", rerank=RerankSettings(server_token="secret-secret-secret"))
        )
    check_rerank_exposure(RerankServerSettings(host="0.0.0.0", rerank=RerankSettings(server_token=TOKEN)))
    result = CliRunner().invoke(cli, ["rerank-server", "--host", "0.0.0.0"], env={"RERANK_SERVER_TOKEN": ""})
    assert result.exit_code == 2 and "RERANK_SERVER_TOKEN" in result.output and no_uvicorn == []


def test_the_rerank_server_checks_its_token_and_the_remote_backend_sends_it() -> None:
    settings = RerankServerSettings(rerank=RerankSettings(server_token=TOKEN))
    body = {"query": "bees", "documents": ["bees dance", "tides"]}
    with TestClient(create_rerank_app(settings, reranker=FakeReranker())) as server:
        assert server.post("/v1/rerank", json=body).status_code == 401
        wrong = server.post("/v1/rerank", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "RERANK_SERVER_TOKEN" in wrong.json()["error"]["message"]
        assert server.get("/info").status_code == 401
        assert server.get("/health").status_code == 200 and server.get("/ready").status_code == 200
        remote = RemoteReranker("http://testserver", api_key=TOKEN, client=server)
        assert [h.index for h in remote.rank("bees", body["documents"])] == [0, 1]
        with pytest.raises(RerankUnavailableError, match="RERANK_SERVER_TOKEN"):
            RemoteReranker("http://testserver", client=server).rank("bees", body["documents"])
    backend = make_reranker(RerankSettings(backend="remote", url="http://127.0.0.1:1", server_token=TOKEN))
    assert isinstance(backend, RemoteReranker) and backend._headers == {"Authorization": f"Bearer {TOKEN}"}
