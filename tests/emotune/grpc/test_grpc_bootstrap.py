"""The gRPC bootstrap over real loopback servers: health, error mapping both ways, deadlines, TLS, shutdown."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY
from pydantic import BaseModel, Field

from emotune import errors
from emotune.grpc.client import error_details, open_channel, to_domain_error
from emotune.grpc.probe import check
from emotune.grpc.probe import main as probe_main
from emotune.grpc.server import start_server
from emotune.metrics import start_metrics_server
from emotune.settings import Settings

SERVICE = "emotune.test.Probe"


class _Spec(BaseModel):
    temperature: float = Field(le=2.0)


def _raise(kind: str) -> None:
    if kind == "invalid":
        raise errors.InvalidInput("temperature must be <= 2", file="styles.yaml", line=7, field="styles[1].temperature")
    if kind == "not_found":
        raise errors.NotFound("model 'qwen:tender' not found", model="qwen:tender")
    if kind == "exhausted":
        raise errors.ResourceExhausted("teacher concurrency is full", retry_after=2.5)
    if kind == "corrupt":
        raise errors.CorruptArtifact("weights.bin does not match", key="models/m")
    if kind == "pydantic":
        _Spec(temperature=9)
    if kind == "bug":
        raise RuntimeError("db password=hunter2 leaked in a bug")


async def _unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    kind = request.decode()
    if kind.startswith("sleep:"):
        await asyncio.sleep(float(kind.split(":", 1)[1]))
        return b"slept"
    _raise(kind)
    return b"ok:" + request


async def _stream(request: bytes, context: grpc.aio.ServicerContext):
    kind = request.decode()
    yield b"first"
    if kind.startswith("sleep:"):
        await asyncio.sleep(float(kind.split(":", 1)[1]))
    _raise(kind)
    yield b"second"


def _add_probe_service(server: grpc.aio.Server) -> list[str]:
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(_unary),
        "Stream": grpc.unary_stream_rpc_method_handler(_stream),
    }),))
    return [SERVICE]


@pytest.fixture
async def server():
    running = await start_server("datagen", Settings(grpc_shutdown_grace_seconds=1), _add_probe_service, port=0)
    yield running
    await running.stop()


def _calls(channel: grpc.aio.Channel):
    return (channel.unary_unary(f"/{SERVICE}/Unary"), channel.unary_stream(f"/{SERVICE}/Stream"))


async def test_health_round_trip(server):
    address = f"127.0.0.1:{server.port}"
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", SERVICE):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Check(health_pb2.HealthCheckRequest(service="emotune.v1.Unknown"), timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert await asyncio.to_thread(check, address)
    assert await asyncio.to_thread(probe_main, [address, SERVICE]) == 0
    assert await asyncio.to_thread(probe_main, [address, "emotune.v1.Unknown"]) == 1


def test_probe_reports_a_dead_address():
    assert check("127.0.0.1:1", timeout=1) is False


@pytest.mark.parametrize(
    ("kind", "code", "error_type", "details"),
    [
        ("invalid", grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidInput,
         {"type": "InvalidInput", "file": "styles.yaml", "line": 7, "field": "styles[1].temperature"}),
        ("not_found", grpc.StatusCode.NOT_FOUND, errors.NotFound, {"type": "NotFound", "model": "qwen:tender"}),
        ("exhausted", grpc.StatusCode.RESOURCE_EXHAUSTED, errors.ResourceExhausted,
         {"type": "ResourceExhausted", "retry_after": 2.5}),
        ("corrupt", grpc.StatusCode.DATA_LOSS, errors.CorruptArtifact, {"type": "CorruptArtifact", "key": "models/m"}),
        ("pydantic", grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidInput,
         {"type": "InvalidInput", "field": "temperature", "errors": 1}),
    ],
)
async def test_domain_errors_map_to_status_codes_and_back(server, kind, code, error_type, details):
    async with open_channel(f"127.0.0.1:{server.port}", Settings()) as channel:
        unary, stream = _calls(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await unary(kind.encode())
        assert info.value.code() == code
        assert error_details(info.value) == details
        domain = to_domain_error(info.value)
        assert type(domain) is error_type and domain.message == info.value.details()

        # the same mapping when a stream fails after sending something
        call = stream(kind.encode())
        assert await call.read() == b"first"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.read()
        assert info.value.code() == code and error_details(info.value) == details


async def test_the_client_gets_back_what_the_server_raised(server):
    async with open_channel(f"127.0.0.1:{server.port}", Settings()) as channel:
        unary, _ = _calls(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await unary(b"invalid")
        bad = to_domain_error(info.value)
        assert str(bad) == "styles.yaml:7: styles[1].temperature: temperature must be <= 2"
        assert (bad.file, bad.line, bad.field) == ("styles.yaml", 7, "styles[1].temperature")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await unary(b"exhausted")
        busy = to_domain_error(info.value)
        assert busy.retry_after == 2.5 and busy.message == "teacher concurrency is full"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await unary(b"pydantic")
        assert info.value.details().startswith("temperature: Input should be less than or equal to 2")


async def test_unexpected_exceptions_are_internal_without_leaking_details(server):
    async with open_channel(f"127.0.0.1:{server.port}", Settings()) as channel:
        unary, _ = _calls(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await unary(b"bug")
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert info.value.details().startswith("internal error (incident ")
    assert "hunter2" not in info.value.details() and "hunter2" not in json.dumps(error_details(info.value))
    assert type(to_domain_error(info.value)) is errors.EmotuneError


async def test_every_call_gets_the_default_deadline(server):
    settings = Settings(grpc_deadline_seconds=0.3)
    async with open_channel(f"127.0.0.1:{server.port}", settings, stream_deadline=0.5) as channel:
        unary, stream = _calls(channel)
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await unary(b"sleep:5")
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert 0.25 < time.monotonic() - started < 3
        assert isinstance(to_domain_error(info.value), errors.Unavailable)

        call = stream(b"sleep:5")
        assert await call.read() == b"first"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.read()
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

        # a deadline the caller chose wins over the default
        assert await unary(b"sleep:0.5", timeout=5) == b"slept"


async def test_calls_are_counted_in_prometheus_metrics(server):
    def count(code: str) -> float:
        return REGISTRY.get_sample_value(
            "emotune_grpc_requests_total", {"service": "datagen", "method": "Unary", "code": code}) or 0.0

    before_ok, before_missing = count("OK"), count("NOT_FOUND")
    async with open_channel(f"127.0.0.1:{server.port}", Settings()) as channel:
        unary, _ = _calls(channel)
        assert await unary(b"fine") == b"ok:fine"
        with pytest.raises(grpc.aio.AioRpcError):
            await unary(b"not_found")
    assert (count("OK"), count("NOT_FOUND")) == (before_ok + 1, before_missing + 1)
    port = start_metrics_server(0)
    async with httpx.AsyncClient(timeout=10) as client:
        body = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    assert 'emotune_grpc_requests_total{code="NOT_FOUND",method="Unary",service="datagen"}' in body


async def test_graceful_shutdown_lets_calls_in_flight_finish():
    running = await start_server("datagen", Settings(grpc_shutdown_grace_seconds=5), _add_probe_service, port=0)
    address = f"127.0.0.1:{running.port}"
    async with open_channel(address, Settings()) as channel:
        unary, _ = _calls(channel)
        in_flight = asyncio.ensure_future(unary(b"sleep:0.5"))
        await asyncio.sleep(0.1)
        stopping = asyncio.ensure_future(running.stop())
        await asyncio.sleep(0.1)
        assert await in_flight == b"slept"
        await stopping
    assert not await asyncio.to_thread(check, address, "", 1)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem"), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return folder / "cert.pem", folder / "key.pem"


async def test_tls_server_and_client(tls_files, monkeypatch):
    cert, key = tls_files
    settings = Settings(grpc_tls_cert=cert, grpc_tls_key=key, grpc_tls_ca=cert)
    running = await start_server("datagen", settings, _add_probe_service, port=0)
    address = f"localhost:{running.port}"
    try:
        async with open_channel(address, settings) as channel:
            unary, _ = _calls(channel)
            assert await unary(b"tls") == b"ok:tls"
        async with open_channel(address, Settings()) as plaintext:  # a client without TLS gets nowhere
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _calls(plaintext)[0](b"x", timeout=2)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert await asyncio.to_thread(check, address, "", 3, cert.read_bytes())
        monkeypatch.setenv("EMOTUNE_GRPC_TLS_CA", str(cert))
        assert await asyncio.to_thread(probe_main, [address]) == 0
    finally:
        await running.stop()

