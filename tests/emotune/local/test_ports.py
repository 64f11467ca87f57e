"""Port blocks for side-by-side local stacks stay clear of the kernel's ephemeral range (CI saw a stack's trainer
fail to bind a port an outgoing connection had taken between the check and the bind)."""

from __future__ import annotations

import socket

import pytest

from emotune.local import supervisor
from emotune.local.supervisor import GATEWAY_PORT, GRPC_PORTS, METRICS_PORTS, UI_PORT, free_port_offset

BASES = [*GRPC_PORTS.values(), *METRICS_PORTS.values(), GATEWAY_PORT, UI_PORT]


@pytest.mark.parametrize("ephemeral", [range(32768, 61000), range(40000, 60000)])
def test_no_port_of_the_block_is_ephemeral(monkeypatch, ephemeral: range):
    monkeypatch.setattr(supervisor, "_ephemeral_port_range", lambda: ephemeral)
    for _ in range(20):
        offset = free_port_offset()
        assert not [base + offset for base in BASES if base + offset in ephemeral]
        assert all(base + offset < 65536 for base in BASES)


def test_a_taken_port_moves_the_block(monkeypatch):
    monkeypatch.setattr(supervisor, "_ephemeral_port_range", lambda: range(32768, 61000))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", GRPC_PORTS["datagen"] + 12000))
        offsets = {free_port_offset(low=12000, high=12004) for _ in range(20)}
    assert offsets and 12000 not in offsets


def test_a_range_no_block_can_avoid_still_gives_a_free_block(monkeypatch):
    monkeypatch.setattr(supervisor, "_ephemeral_port_range", lambda: range(1024, 65536))
    offset = free_port_offset()
    for base in BASES:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", base + offset))


def test_the_kernel_range_is_read():
    ephemeral = supervisor._ephemeral_port_range()
    assert 1024 <= ephemeral.start < ephemeral.stop <= 65536
