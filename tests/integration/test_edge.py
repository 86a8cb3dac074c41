"""Hostile clients at the edge: nginx in front of a gunicorn instance, as deployed.

A client that stops sending its body gets nginx's 408 within the configured bound and never
holds an API thread; headers too large are refused in the API's JSON shape; tokens never
reach a log at any layer.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import requests

from auditlog.settings import Settings
from tests import factories
from tests.helpers import wait_for
from tests.integration.conftest import Tokens
from tests.topology import ApiInstance, NginxProcess, free_port

pytestmark = pytest.mark.slow

# Short, so that the test waits seconds; production keeps the template's 30 s.
BODY_TIMEOUT_S = 2


@dataclass
class Edge:
    nginx: NginxProcess
    api: ApiInstance
    token: str

    def get(self, path: str, **headers: str) -> requests.Response:
        return requests.get(
            self.nginx.url(path),
            headers={"Authorization": f"Bearer {self.token}", **headers},
            timeout=10,
        )


@pytest.fixture(scope="module")
def edge(settings: Settings, logs_dir: Path, tokens: Tokens) -> Iterator[Edge]:
    # One instance with a single thread: a request that held it would stall the next one.
    api = ApiInstance(settings, logs_dir, f"edge-{uuid.uuid4().hex[:4]}", workers=1, threads=1)
    nginx = NginxProcess(
        settings,
        [api.address, api.address],
        f"127.0.0.1:{free_port()}",
        logs_dir,
        body_timeout_s=BODY_TIMEOUT_S,
    )
    try:
        api.start()
        nginx.start()
        yield Edge(nginx, api, tokens.admin)
    finally:
        nginx.stop()
        api.stop()
        nginx.remove()


def send_head(
    edge: Edge, content_length: int, first_bytes: bytes, request_id: str = "slow"
) -> socket.socket:
    """Open a POST that announces a body and send its start; the caller sends the rest."""
    host, port = edge.nginx.address.split(":")
    sock = socket.create_connection((host, int(port)), timeout=BODY_TIMEOUT_S * 5)
    sock.sendall(
        b"POST /v1/events HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\n"
        + f"Authorization: Bearer {edge.token}\r\nX-Request-ID: {request_id}\r\n".encode()
        + f"Content-Length: {content_length}\r\n\r\n".encode()
        + first_bytes
    )
    return sock


def read_answer(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


class TestSlowBody:
    def test_a_stalled_body_is_cut_off_in_time(self, edge: Edge):
        """nginx gives up after client_body_timeout: it logs 408 and closes the connection
        (it sends no answer to a client that has stopped talking)."""
        request_id = f"stalled-{uuid.uuid4().hex}"
        started = time.monotonic()
        with send_head(edge, 1000, b'{"type": "customer', request_id) as sock:
            answer = read_answer(sock)
        elapsed = time.monotonic() - started
        assert answer == b""
        assert BODY_TIMEOUT_S - 0.5 <= elapsed < BODY_TIMEOUT_S + 3
        line = wait_for(
            lambda: next(
                (x for x in edge.nginx.access_lines() if x["client_request_id"] == request_id), None
            ),
            timeout=5,
            what="the access log line",
        )
        assert line["status"] == 408
        assert line["upstream_addr"] == ""  # the API never saw it

    def test_a_trickling_body_does_not_hold_the_api(self, edge: Edge):
        """nginx buffers the body: while a client trickles, the one API thread serves others."""
        body = orjson.dumps(factories.event())
        with send_head(edge, len(body), body[:10]) as sock:
            for index in range(10, 14):
                sock.sendall(body[index : index + 1])
                started = time.monotonic()
                assert edge.get("/v1/integrity/public-key").status_code == 200
                assert time.monotonic() - started < 1.0
                time.sleep(BODY_TIMEOUT_S / 4)
            sock.sendall(body[14:])
            answer = read_answer(sock)
        assert answer.startswith(b"HTTP/1.1 202"), answer[:300]


class TestHugeHeaders:
    @pytest.mark.parametrize("name", ["Authorization", "X-Anything"])
    def test_a_header_over_8k_is_refused_in_json(self, edge: Edge, name: str):
        value = "Bearer " + "x" * 20_000 if name == "Authorization" else "y" * 20_000
        answer = requests.get(edge.nginx.url("/v1/events"), headers={name: value}, timeout=10)
        assert answer.status_code == 431
        assert answer.headers["content-type"] == "application/json"
        assert answer.json()["title"] == "Request header fields too large"
        assert answer.headers["x-request-id"]

    def test_a_header_under_nginx_limit_reaches_the_app_and_is_401(self, edge: Edge):
        answer = requests.get(
            edge.nginx.url("/v1/events"),
            headers={"Authorization": "Bearer " + "x" * 7000},
            timeout=10,
        )
        assert answer.status_code == 401
        assert answer.json()["title"] == "Unauthorized"


class TestBytesThatAreNotUtf8:
    """What a real server hands the app (bytes as latin-1) is checked, not repaired."""

    @pytest.mark.parametrize(
        ("target", "description"),
        [
            ("/v1/events/%FF%FE", "the path is not valid UTF-8"),
            ("/v1/events?service=%FF", "service: is not valid UTF-8"),
        ],
    )
    def test_a_400_through_nginx_and_gunicorn(self, edge: Edge, target: str, description: str):
        answer = edge.get(target)
        assert answer.status_code == 400, answer.text
        assert answer.json()["description"].startswith(description)


class TestTokensStayOutOfLogs:
    def test_no_layer_logs_a_token(self, edge: Edge, tokens: Tokens):
        unknown = "alk_" + uuid.uuid4().hex * 2
        for token in (edge.token, tokens.reader, unknown):
            for path in ("/v1/events?limit=1", "/v1/nowhere", "/v1/events?bad=1"):
                requests.get(
                    edge.nginx.url(path), headers={"Authorization": f"Bearer {token}"}, timeout=10
                )
            requests.post(
                edge.nginx.url("/v1/events"),
                data=b"{",
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                timeout=10,
            )
        time.sleep(0.5)  # the access log is written after the answer
        logs = {
            "nginx access log": edge.nginx.access_log.read_text(),
            "nginx error log": edge.nginx.log_path.read_text(),
            "gunicorn": edge.api.log_path.read_text(),
        }
        assert '"uri":"/v1/events?limit=1"' in logs["nginx access log"]
        assert '"event":"request"' in logs["gunicorn"]  # orjson: no spaces
        for token in (edge.token, tokens.reader, unknown):
            secret = token.removeprefix("alk_")
            leaked = [where for where, text in logs.items() if secret in text]
            assert not leaked, f"a token is in the {leaked}"
