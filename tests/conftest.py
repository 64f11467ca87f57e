"""Fixtures shared by the whole suite: artifact stores on both backends, backed by a real S3 server.

- ``s3_server`` (session): OpenStack Swift with s3api started by ``scripts/swift-s3.sh`` on a free loopback
  port the first time a test needs it, stopped at the end of the session.
- ``s3_settings`` / ``s3_store``: Settings and an ``S3Store`` on a fresh bucket per test (tests never share data).
- ``local_store``: a ``LocalStore`` in the test's tmp dir.
- ``any_store``: parametrized over ``local`` and ``s3``; a contract test written once runs on both.
"""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from emotune.settings import Settings
from tests.support import free_port

REPO = Path(__file__).resolve().parents[1]
SWIFT_SCRIPT = REPO / "scripts" / "swift-s3.sh"


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # host:port
    access_key: str = "test:tester"
    secret_key: str = "testing123"
    region: str = "us-east-1"

    def settings(self, bucket: str | None = None, **overrides: object) -> Settings:
        """Settings for this server; a fresh bucket unless one is named."""
        bucket = bucket or unique_bucket()
        values: dict[str, object] = {
            "store_backend": "s3", "s3_endpoint": self.endpoint, "s3_access_key": SecretStr(self.access_key),
            "s3_secret_key": SecretStr(self.secret_key), "s3_bucket": bucket, "s3_region": self.region,
            "s3_secure": False,
        }
        return Settings(**{**values, **overrides})

    def env(self, bucket: str) -> dict[str, str]:
        """The same configuration as EMOTUNE_* variables, for subprocesses."""
        return {
            "EMOTUNE_STORE_BACKEND": "s3", "EMOTUNE_S3_ENDPOINT": self.endpoint,
            "EMOTUNE_S3_ACCESS_KEY": self.access_key, "EMOTUNE_S3_SECRET_KEY": self.secret_key,
            "EMOTUNE_S3_BUCKET": bucket, "EMOTUNE_S3_REGION": self.region, "EMOTUNE_S3_SECURE": "false",
        }


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("swift")
    port = free_port()
    started = subprocess.run(
        [str(SWIFT_SCRIPT), str(root), str(port)], capture_output=True, text=True, timeout=120, check=False
    )
    if started.returncode != 0:
        pytest.fail(f"Swift S3 server did not start (exit {started.returncode}); "
                    f"scripts/system-deps.sh installs it.\n{started.stdout}\n{started.stderr}")
    try:
        yield S3Server(endpoint=f"127.0.0.1:{port}")
    finally:
        subprocess.run([str(SWIFT_SCRIPT), "stop", str(root)], check=False, timeout=60)


def unique_bucket() -> str:
    return f"emotune-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def s3_settings(s3_server: S3Server) -> Settings:
    return s3_server.settings()


@pytest.fixture
def s3_store(s3_settings: Settings):
    from emotune.store.s3 import S3Store

    return S3Store.from_settings(s3_settings)


@pytest.fixture
def local_store(tmp_path: Path):
    from emotune.store.local import LocalStore

    return LocalStore(tmp_path / "store")


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def any_store(request: pytest.FixtureRequest):
    return request.getfixturevalue(f"{request.param}_store")


@pytest.fixture
def store_env(request: pytest.FixtureRequest, any_store) -> dict[str, str]:
    """EMOTUNE_* variables that make ``open_store(Settings())`` in a subprocess open the same store as ``any_store``."""
    if any_store.backend == "local":
        return {"EMOTUNE_STORE_BACKEND": "local", "EMOTUNE_STORE_PATH": str(any_store.root)}
    return request.getfixturevalue("s3_server").env(any_store.bucket)
