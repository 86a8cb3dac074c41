"""Long answers (follow, export) through the front door: each key has a share of them, and a
client that goes away gives its slot back at once (the stream ends, its cursor closes)."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from auditlog.settings import Settings
from tests.helpers import wait_for
from tests.integration.conftest import Tokens, create_key
from tests.topology import ApiInstance, NginxProcess

pytestmark = pytest.mark.slow


@dataclass
class Edge:
    nginx: NginxProcess
    api: ApiInstance


@pytest.fixture(scope="module")
def edge(settings: Settings, logs_dir: Path, worker: Any) -> Iterator[Edge]:
    """nginx before one instance of one process: every follower lands in the same process,
    whose shares are 2 followers in all and 1 per key."""
    own = settings.model_copy(
        update={"follow_max_per_process": 2, "follow_max_per_key": 1, "follow_max_s": 60.0}
    )
    api = ApiInstance(own, logs_dir, f"long-{uuid.uuid4().hex[:4]}", workers=1)
    nginx = NginxProcess(own, [api.address, api.address], "127.0.0.1:9", logs_dir)
    try:
        api.start()
        nginx.start()
        yield Edge(nginx, api)
    finally:
        nginx.stop()
        api.stop()
        nginx.remove()


class Follower:
    """A follow stream held open on a socket of its own: its status, then silence until
    closed."""

    def __init__(self, address: str, token: str):
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.sock.sendall(
            (
                "GET /v1/events/tail?follow=true HTTP/1.1\r\nHost: auditlog\r\n"
                f"Authorization: Bearer {token}\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            head += chunk
        self.status = int(head.split(b" ", 2)[1]) if head else 0

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def keys(settings: Settings) -> tuple[str, str]:
    stamp = time.monotonic_ns()
    return create_key(settings, f"a-{stamp}", "read"), create_key(settings, f"b-{stamp}", "read")


class TestShares:
    def test_each_key_has_its_share_and_a_client_gone_frees_its_slot(
        self, edge: Edge, keys: tuple[str, str], tokens: Tokens
    ):
        a, b = keys
        first = Follower(edge.nginx.address, a)
        held = [first]
        try:
            assert first.status == 200
            second = Follower(edge.nginx.address, a)  # the same key: over its share
            held.append(second)
            assert second.status == 503
            other = Follower(edge.nginx.address, b)  # another key: a share of its own
            held.append(other)
            assert other.status == 200
            first.close()  # the client goes away: its slot is free again, soon

            def again() -> Follower | None:
                follower = Follower(edge.nginx.address, a)
                held.append(follower)
                return follower if follower.status == 200 else None

            started = time.monotonic()
            wait_for(again, timeout=5, interval=0.1, what="key a's slot freed")
            assert time.monotonic() - started < 3
        finally:
            for follower in held:
                follower.close()
