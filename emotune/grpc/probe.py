"""Health probe for container healthchecks: ``python -m emotune.grpc.probe HOST:PORT [SERVICE]``.

Exits 0 when the standard gRPC health service answers SERVING, 1 otherwise. When ``EMOTUNE_GRPC_TLS_CA`` is
set (the services run with TLS), the probe verifies the server against that CA like every other client.
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from emotune.settings import Settings


def check(address: str, service: str = "", timeout: float = 3.0, tls_ca: bytes | None = None) -> bool:
    channel = (
        grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=tls_ca))
        if tls_ca else grpc.insecure_channel(address)
    )
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m emotune.grpc.probe HOST:PORT [SERVICE]", file=sys.stderr)
        return 2
    ca_path = Settings().grpc_tls_ca
    ok = check(args[0], args[1] if len(args) > 1 else "", tls_ca=ca_path.read_bytes() if ca_path else None)
    print("SERVING" if ok else "NOT_SERVING")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
