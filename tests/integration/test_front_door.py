"""The front door: what reaches the API through nginx, and what an instance does with every
spelling of every route.

nginx forwards a path as it routed it (doubled slashes merged, dot segments resolved,
escaped letters decoded, a trailing slash dropped) or refuses it (an encoded slash, a byte
that is not printable ASCII); every error it answers itself is the API's JSON problem shape
and costs no error-level log line; each client address has a share of connections and
requests; Flower asks for its password on every path and has its control API off. The same
spellings are tried directly against an instance (gunicorn with deploy/gunicorn.conf.py, as
`make run` starts one): no spelling without a key answers 2xx or 3xx, or shows any data.
Requests are sent byte for byte (tests/topology.py, `exchange`).
"""

from __future__ import annotations

import base64
import http.client
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from flower import urls as flower_urls
from sqlalchemy import Engine, text

from auditlog.openapi import build_openapi
from auditlog.settings import Settings
from tests import factories
from tests.helpers import wait_for
from tests.integration.conftest import Tokens, wait_stored
from tests.spellings import CANONICALISED, spellings
from tests.topology import (
    Answer,
    ApiInstance,
    FlowerProcess,
    NginxProcess,
    exchange,
)

pytestmark = pytest.mark.slow

FLOWER_PASSWORD = "front-door-flower"
# Every route's path parameters get one value; an id no event has.
PARAMETER = {"event_id": "0b7c6f2e-3f5e-4a8e-9f55-2d0c6c2b1a02"}
# nginx's own error log: anything at these levels is a line an operator is paged for.
SERIOUS = re.compile(r"\[(error|crit|alert|emerg)\]")


@dataclass
class Door:
    settings: Settings
    api: ApiInstance
    nginx: NginxProcess
    flower: FlowerProcess
    logs_dir: Path
    # Strings no answer to a request without a key may contain: the canary event's
    # fields and the keys' names.
    secrets: tuple[str, ...]

    def targets(self) -> dict[str, str]:
        return {"nginx": self.nginx.address, "instance": self.api.address}


@pytest.fixture(scope="module")
def door(
    settings: Settings, logs_dir: Path, tokens: Tokens, owner_db: Engine, worker: Any
) -> Iterator[Door]:
    own = settings.model_copy(update={"flower_password": FLOWER_PASSWORD})
    api = ApiInstance(own, logs_dir, f"door-{uuid.uuid4().hex[:4]}", workers=1, threads=4)
    flower = FlowerProcess(own, logs_dir)
    nginx = NginxProcess(own, [api.address, api.address], flower.address, logs_dir)
    started: list[Any] = []
    try:
        for service in (api, flower, nginx):
            service.start()
            started.append(service)
        canary = factories.event(
            service="front-door-canary", subject={"type": "vault", "id": "canary-subject"}
        )
        posted = requests.post(
            api.url("/v1/events"),
            data=orjson.dumps(canary),
            headers={"Authorization": f"Bearer {tokens.admin}", "Content-Type": "application/json"},
            timeout=10,
        )
        assert posted.status_code == 202, posted.text
        wait_stored(owner_db, [canary["id"]])
        secrets = (canary["id"], "front-door-canary", "canary-subject", "test-admin", "auditor")
        yield Door(own, api, nginx, flower, logs_dir, secrets)
    finally:
        for service in reversed(started):
            service.stop()
        nginx.remove()


# --- Spellings -----------------------------------------------------------------------------

DOCUMENT = build_openapi(Settings.from_env({}))


def protected_operations() -> list[tuple[str, str]]:
    """(method, path) for GET and POST and every method a route declares, of every route
    that asks for a key: from the served document's route table, so a new route is covered
    without editing this test (the fixture checks the instance serves this very document)."""
    found = []
    for template, operations in DOCUMENT["paths"].items():
        if not any(operation.get("security") for operation in operations.values()):
            continue  # public: /healthz, /readyz, /openapi.json, /metrics
        path = template.format(**PARAMETER)
        for method in sorted({"GET", "POST", *(m.upper() for m in operations)}):
            found.append((method, path))
    return found


def assert_problem(answer: Answer, where: str) -> dict[str, Any]:
    """The API's problem shape and nothing else: no data rides on an error."""
    assert answer.headers.get_content_type() == "application/json", (where, answer.body[:300])
    body = answer.json()
    assert set(body) == {"title", "description"}, (where, body)
    assert all(isinstance(v, str) and v for v in body.values()), (where, body)
    assert answer.headers["X-Request-ID"], where
    return body


def assert_refusal(answer: Answer, target: str, where: str) -> None:
    """Through nginx every error is the API's shape. An instance's own HTTP server may refuse
    a request line the app never sees (gunicorn: `%2Fv1/keys` is no origin-form target) in its
    own words: nginx refuses those itself, and they carry no data either way."""
    if target == "nginx" or answer.headers.get_content_type() == "application/json":
        assert_problem(answer, where)


class TestSpellings:
    def test_the_instance_serves_the_document_the_routes_come_from(self, door: Door):
        for address in door.targets().values():
            assert exchange(address, "GET", "/openapi.json").json() == DOCUMENT

    @pytest.mark.parametrize("target", ["nginx", "instance"])
    def test_no_spelling_without_a_key_answers_or_shows_data(self, door: Door, target: str):
        address = door.targets()[target]
        operations = protected_operations()
        assert len(operations) >= 10  # the document is read, not empty
        tried = 0
        for method, path in operations:
            for kind, spelled in spellings(path):
                answer = exchange(address, method, spelled)
                where = f"{target}: {method} {spelled} ({kind}) -> {answer.status}"
                assert answer.status >= 400, where
                assert answer.status < 500, where
                leaked = [s for s in door.secrets if s.encode() in answer.body]
                assert not leaked, (where, leaked)
                assert_refusal(answer, target, where)
                tried += 1
        assert tried > 500

    @pytest.mark.parametrize("target", ["nginx", "instance"])
    @pytest.mark.parametrize(
        "probe",
        [("GET", "/v1/keys", "billing_writer"), ("POST", "/v1/events", "reader")],
        ids=["write-key-lists-keys", "read-key-posts"],
    )
    def test_a_key_of_the_wrong_scope_is_refused_in_every_spelling(
        self, door: Door, tokens: Tokens, target: str, probe: tuple[str, str, str]
    ):
        """403 wherever the spelling reaches the route, a refusal wherever it does not:
        never an answer."""
        method, path, key = probe
        headers = {"Authorization": f"Bearer {getattr(tokens, key)}"}
        if method == "POST":
            headers["Content-Type"] = "application/json"
        body = orjson.dumps(factories.event()) if method == "POST" else b""
        for kind, spelled in spellings(path):
            answer = exchange(door.targets()[target], method, spelled, headers, body)
            where = f"{target}: {method} {spelled} ({kind}) -> {answer.status}"
            assert 400 <= answer.status < 500, where
            assert_refusal(answer, target, where)
            if kind == "exact" or (target == "nginx" and kind in CANONICALISED):
                assert answer.status == 403, where
                assert answer.json()["title"] == "Forbidden", where

    def test_nginx_forwards_the_route_as_it_routed_it(
        self, door: Door, tokens: Tokens, owner_db: Engine, worker: object
    ):
        """What the instance saw (the path its audit record of the read names) is the route's
        own path, whatever the spelling."""
        headers = {"Authorization": f"Bearer {tokens.admin}"}
        sent = {}
        for kind, spelled in spellings("/v1/integrity/tree-head"):
            if kind in CANONICALISED:
                client_id = f"spelled-{uuid.uuid4().hex}"
                answer = exchange(
                    door.nginx.address, "GET", spelled, {**headers, "X-Request-ID": client_id}
                )
                assert answer.status == 200, (spelled, answer.body[:200])
                sent[client_id] = spelled

        def paths() -> dict[str, str] | None:
            with owner_db.connect() as conn:
                rows = conn.execute(
                    text(
                        "SELECT context->>'client_request_id', context->>'path' FROM events"
                        " WHERE type = 'auditlog.query.executed'"
                        " AND context->>'client_request_id' = ANY(:ids)"
                    ),
                    {"ids": list(sent)},
                ).all()
            return dict(rows) if len(rows) == len(sent) else None  # type: ignore[arg-type]

        seen = wait_for(paths, timeout=30, what="the reads' audit records")
        assert set(seen.values()) == {"/v1/integrity/tree-head"}, sent


# --- Errors in one shape -------------------------------------------------------------------

LONG = "x" * 8200


@pytest.mark.parametrize(
    "case",
    [
        ("GET", "/v1/%00", {}, 400, "Bad request"),
        ("GET", "/../v1/events", {}, 400, "Bad request"),
        ("GET", "/v1%2Fevents", {}, 400, "Bad request"),
        ("GET", "/v1/\xe9vents", {}, 400, "Bad request"),
        ("get", "/v1/events", {}, 400, "Bad request"),
        ("GET", "/healthz", {"Host": "bad host"}, 400, "Bad request"),
        ("GET", "/v1/" + LONG, {}, 414, "URI too long"),
        ("GET", "/v1/events?q=" + LONG, {}, 414, "URI too long"),
        ("GET", "/v1/events", {"X-Long": LONG}, 431, "Request header fields too large"),
        ("GET", "/v1/events", {f"X-H{n}": "y" * 7000 for n in range(6)}, 431, None),
        ("TRACE", "/v1/events", {}, 405, "Method not allowed"),
        ("POST", "/v1/keys", {}, 405, None),
        ("DELETE", "/v1/events", {}, 405, None),
        ("GET", "/nowhere", {}, 404, None),
        ("GET", "/flower", {}, 404, "Not found"),
        ("GET", "/.auditlog/error", {}, 404, "Not found"),
        ("POST", "/v1/events", {"Transfer-Encoding": "gzip"}, 501, "Not implemented"),
    ],
    ids=lambda case: f"{case[0]} {case[1][:24]} {case[3]}",
)
def test_every_error_through_nginx_is_json(
    door: Door, tokens: Tokens, case: tuple[str, str, dict[str, str], int, str | None]
):
    """nginx's refusals and the app's alike; none costs an error-level line in nginx's log."""
    method, target, headers, status, title = case
    log_before = door.nginx.log_path.stat().st_size
    headers = {"Authorization": f"Bearer {tokens.admin}", **headers}
    sent = exchange(door.nginx.address, method, target, headers)
    assert sent.status == status, (sent.status, sent.body[:300])
    body = assert_problem(sent, target)
    if title:
        assert body["title"] == title
    time.sleep(0.2)  # nginx writes its log line after the answer
    with door.nginx.log_path.open("rb") as log:
        log.seek(log_before)
        serious = [
            line
            for line in log.read().decode(errors="replace").splitlines()
            if SERIOUS.search(line)
        ]
    assert not serious, serious


def test_nginx_own_405_says_what_the_route_allows(door: Door, tokens: Tokens):
    """TRACE never reaches the app: nginx's 405 carries the Allow the app would have sent."""
    key = {"Authorization": f"Bearer {tokens.admin}"}
    for path, allowed in (("/v1/events", "GET, POST, OPTIONS"), ("/v1/keys", "GET, OPTIONS")):
        ours = exchange(door.nginx.address, "TRACE", path, key)
        apps = exchange(door.api.address, "DELETE", path, key)
        assert (ours.status, apps.status) == (405, 405)
        assert ours.headers["Allow"] == apps.headers["Allow"] == allowed


class TestWhatNginxLetsThroughTheInstanceReads:
    """nginx's limits are the tighter ones: what it passes on, the app answers (in JSON),
    never the instance's own server in its own words."""

    def test_a_request_at_nginx_limits(self, door: Door):
        target = "/v1/events?service=" + "s" * 8000  # a request line just under 8 KiB
        headers = {f"X-Big-{n}": "v" * 8000 for n in range(3)}
        answer = exchange(door.nginx.address, "GET", target, headers)
        assert answer.status == 401
        assert assert_problem(answer, target)["title"] == "Unauthorized"

    def test_many_small_headers(self, door: Door):
        headers = {f"X-Small-{n}": "v" for n in range(500)}
        answer = exchange(door.nginx.address, "GET", "/v1/events", headers)
        assert answer.status == 401
        assert_problem(answer, "500 headers")


class TestBodiesTheAppDoesNotRead:
    def test_a_large_body_refused_unread_costs_the_next_request_nothing(
        self, door: Door, tokens: Tokens
    ):
        """An instance answers a request without a key before reading its body (401), and
        gunicorn then drains at most 64 KiB of it before it closes the connection it had
        offered to keep alive. nginx must not send the next request (another client's POST,
        never retried) on that connection: it would be a 502. The two requests are
        pipelined, so that nginx picks its idle upstream connection at once."""
        junk = b"[" + b'{"type": "x"},' * 30_000 + b"{}]"
        event = orjson.dumps(factories.event())
        refused = (
            b"POST /v1/events HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(junk)}\r\n\r\n".encode()
            + junk
        )
        accepted = (
            b"POST /v1/events HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {tokens.admin}\r\nConnection: close\r\n".encode()
            + f"Content-Length: {len(event)}\r\n\r\n".encode()
            + event
        )
        host, port = door.nginx.address.rsplit(":", 1)
        for _ in range(10):
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                sock.sendall(refused + accepted)
                first = http.client.HTTPResponse(sock, method="POST")
                first.begin()
                first.read()
                second = http.client.HTTPResponse(sock, method="POST")
                second.begin()
                assert (first.status, second.status) == (401, 202), second.read()[:300]


class TestClientAddress:
    def test_a_client_cannot_choose_the_address_the_instance_sees(self, door: Door):
        """nginx replaces X-Forwarded-For and drops Forwarded: the app records the peer."""
        echo = _HeaderEcho().start()
        nginx = NginxProcess(
            door.settings, [echo.address, echo.address], "127.0.0.1:9", door.logs_dir
        )
        try:
            nginx.start()
            exchange(
                nginx.address,
                "GET",
                "/v1/events",
                {"X-Forwarded-For": "10.9.9.9", "Forwarded": 'for="10.9.9.9"'},
            )
        finally:
            nginx.stop()
            nginx.remove()
            echo.stop()
        head = echo.heads[-1].lower()
        assert b"x-forwarded-for: 127.0.0.1\r\n" in head
        assert b"x-real-ip: 127.0.0.1\r\n" in head
        assert b"10.9.9.9" not in head
        assert b"\r\nforwarded:" not in head

    def test_the_audit_record_names_the_peer_and_keeps_the_clients_id_apart(
        self, door: Door, tokens: Tokens, owner_db: Engine
    ):
        """Through the door, whatever the client claims: the read's record has nginx's peer
        address and request id, and the client's own id as the client's."""
        client_id = f"claimed-{uuid.uuid4().hex}"
        answer = exchange(
            door.nginx.address,
            "GET",
            "/v1/integrity/public-key",
            {
                "Authorization": f"Bearer {tokens.reader}",
                "X-Request-ID": client_id,
                "X-Real-IP": "10.9.9.9",
                "X-Forwarded-For": "10.9.9.9",
                "Forwarded": 'for="10.9.9.9"',
            },
        )
        assert answer.status == 200

        def record() -> dict[str, Any] | None:
            with owner_db.connect() as conn:
                return conn.scalar(
                    text(
                        "SELECT context FROM events WHERE type = 'auditlog.query.executed'"
                        " AND context->>'client_request_id' = :c"
                    ),
                    {"c": client_id},
                )

        context = wait_for(record, timeout=30, what="the read's audit record")
        assert context["ip"] == "127.0.0.1"
        assert context["request_id"] == answer.headers["X-Request-ID"] != client_id


class _HeaderEcho:
    """A TCP server that keeps each request head it gets and answers 204."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"

    def start(self) -> _HeaderEcho:
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
                    data += chunk
                self.heads.append(data)
                conn.sendall(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")

    def stop(self) -> None:
        self._listener.close()


# --- Per-address limits --------------------------------------------------------------------


class TestLimitsPerAddress:
    def test_requests_in_progress(self, door: Door):
        """Past CONNECTIONS_PER_ADDRESS bodies being read, the next request is a 429 at
        once, and the held ones never reach an instance."""
        nginx = NginxProcess(
            door.settings,
            [door.api.address, door.api.address],
            door.flower.address,
            door.logs_dir,
            knobs={"CONNECTIONS_PER_ADDRESS": "2"},
        )
        held: list[socket.socket] = []
        try:
            nginx.start()
            host, port = nginx.address.rsplit(":", 1)
            for _ in range(2):
                sock = socket.create_connection((host, int(port)), timeout=10)
                sock.sendall(
                    b"POST /v1/events HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 1000\r\n\r\n{"
                )
                held.append(sock)
            time.sleep(0.3)  # both bodies are being read
            started = time.monotonic()
            refused = exchange(nginx.address, "GET", "/healthz")
            assert time.monotonic() - started < 2
            assert refused.status == 429
            assert assert_problem(refused, "third")["title"] == "Too many requests"
            assert refused.headers["Retry-After"] == "1"
        finally:
            for sock in held:
                sock.close()
        try:
            time.sleep(0.3)
            assert exchange(nginx.address, "GET", "/healthz").status == 200
        finally:
            nginx.stop()
            nginx.remove()

    def test_request_rate(self, door: Door):
        """Past RATE_PER_ADDRESS and its burst: 429 with Retry-After, until the rate allows
        another. (20 a minute: the test's own pace cannot refill the bucket.)"""
        nginx = NginxProcess(
            door.settings,
            [door.api.address, door.api.address],
            door.flower.address,
            door.logs_dir,
            knobs={"RATE_PER_ADDRESS": "20r/m", "BURST_PER_ADDRESS": "3"},
        )
        try:
            nginx.start()
            answers = [exchange(nginx.address, "GET", "/healthz") for _ in range(8)]
            statuses = [answer.status for answer in answers]
            # One and the burst, less what nginx's readiness probe spent.
            passed = statuses.count(200)
            assert passed in (3, 4), statuses
            assert statuses == [200] * passed + [429] * (8 - passed), statuses
            refused = answers[-1]
            assert assert_problem(refused, "rate")["description"].startswith("too many requests")
            assert refused.headers["Retry-After"] == "1"
            time.sleep(3.5)  # one request's worth at 20 a minute
            assert exchange(nginx.address, "GET", "/healthz").status == 200
            time.sleep(0.3)
            log = nginx.log_path.read_text(errors="replace")
            assert not SERIOUS.search(log), log[-2000:]
        finally:
            nginx.stop()
            nginx.remove()


# --- Flower --------------------------------------------------------------------------------


def flower_paths() -> list[str]:
    """A concrete path for each of Flower's own routes (its route table), under /flower,
    and a static file that exists (tornado serves those with routes of its own)."""
    paths = ["/flower/static/css/flower.css"]
    for handler in flower_urls.handlers:
        pattern = handler.regex.pattern if hasattr(handler, "regex") else handler[0]
        pattern = pattern.rstrip("$")
        concrete = re.sub(r"\(\.[+*]\)", "x", pattern).replace("/?", "")
        if concrete in (".*",):
            concrete = "/no-such-page"
        paths.append("/flower" + concrete)
    return paths


CONTROL = [
    p
    for p in flower_paths()
    if re.search(
        r"/api/(worker/(shutdown|pool|queue)|task/(apply|async-apply|send-task|abort|timeout|rate-limit|revoke))",
        p,
    )
]


class TestFlower:
    @pytest.mark.parametrize("where", ["flower", "nginx"])
    @pytest.mark.parametrize("method", ["GET", "POST"])
    def test_every_path_asks_for_the_password(self, door: Door, where: str, method: str):
        address = door.flower.address if where == "flower" else door.nginx.address
        # On its own port tornado also serves /favicon.ico and /robots.txt from the static files.
        paths = flower_paths() + (["/favicon.ico", "/robots.txt"] if where == "flower" else [])
        assert "/flower/metrics" in paths
        assert "/flower/healthcheck" in paths
        for path in paths:
            for auth in ({}, {"Authorization": "Basic " + _b64("auditlog:wrong")}):
                answer = exchange(address, method, path, auth)
                where_ = f"{where}: {method} {path} -> {answer.status} {answer.body[:100]!r}"
                # Without an OAuth provider Flower has no login page: 404, whoever asks.
                assert answer.status == (404 if path == "/flower/login" else 401), where_
                assert b"auditlog_" not in answer.body, where_  # no metric, no task name
                if where == "nginx":
                    assert_problem(answer, where_)
        metrics = exchange(address, "GET", "/flower/metrics", {"Authorization": self._basic()})
        assert metrics.status == 200
        assert b"flower_" in metrics.body
        style = "/flower/static/css/flower.css"
        assert exchange(address, "GET", style, {"Authorization": self._basic()}).status == 200

    def test_through_nginx_the_challenge_survives_the_json(self, door: Door):
        answer = exchange(door.nginx.address, "GET", "/flower/metrics")
        assert answer.status == 401
        assert answer.headers["WWW-Authenticate"].startswith("Basic")

    @pytest.mark.parametrize("where", ["flower", "nginx"])
    def test_the_control_api_is_off(self, door: Door, where: str):
        address = door.flower.address if where == "flower" else door.nginx.address
        assert len(CONTROL) >= 10
        for path in CONTROL:
            answer = exchange(address, "POST", path, {"Authorization": self._basic()})
            assert answer.status == 403, (path, answer.status, answer.body[:200])

    def test_an_operator_can_turn_it_on(self, door: Door, logs_dir: Path):
        on = FlowerProcess(door.settings.model_copy(update={"flower_control": True}), logs_dir)
        try:
            on.start()
            answer = exchange(
                on.address,
                "POST",
                "/flower/api/worker/shutdown/nobody@nowhere",
                {"Authorization": self._basic()},
            )
            # Past the read-only check: the worker is unknown.
            assert answer.status == 404, answer.body[:200]
        finally:
            on.kill()  # a throwaway: no need to wait for its graceful stop

    @staticmethod
    def _basic() -> str:
        return "Basic " + _b64(f"auditlog:{FLOWER_PASSWORD}")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
