"""Hostile input through the real app: every bad request gets a precise 4xx in the API's
error shape ({title, description}, or the 422 list), nothing of it reaches the writer, and
the server logs no error or traceback for it.

Every test runs twice: in-process (falcon's test client) and through nginx and one gunicorn
instance (real HTTP, sent byte for byte), where what nginx refuses itself (a NUL in a header,
a header over its limit) is refused there, in the same shape.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from falcon import testing
from sqlalchemy import Engine

from auditlog.settings import Settings
from tests import factories
from tests.helpers import WorkerProcess, wait_for
from tests.integration.conftest import (
    LogCapture,
    Tokens,
    authorized,
    post,
    stored_counts,
    wait_stored,
)
from tests.spellings import CANONICALISED, spellings
from tests.topology import ApiInstance, HttpClient, NginxProcess

NUL = "\x00"
# Every GET endpoint, with the parameters that make a valid request of it.
EVENT_ID = "0b7c6f2e-3f5e-4a8e-9f55-2d0c6c2b1a01"
GET_ENDPOINTS: dict[str, dict[str, str]] = {
    "/v1/events": {},
    f"/v1/events/{EVENT_ID}": {},
    "/v1/events/tail": {},
    # A narrow range: every spelling would otherwise stream the session's whole log.
    "/v1/events/export": {"since": "2026-01-01T00:00:00Z", "until": "2026-01-01T00:00:01Z"},
    "/v1/stats/buckets": {"since": "2026-01-01T00:00:00Z", "until": "2026-01-02T00:00:00Z"},
    f"/v1/events/{EVENT_ID}/proof": {},
    "/v1/integrity/tree-head": {},
    "/v1/integrity/consistency": {"first": "1", "second": "2"},
    "/v1/integrity/public-key": {},
    "/v1/keys": {},
    "/v1/log/checkpoint": {},
    "/v1/log/tile/0/x001/000": {},
    "/v1/log/tile/entries/000.p/7": {},
}
# The endpoints that filter events, and the filters each takes.
STRING_FILTERS = (
    "service",
    "type",
    "actor_type",
    "actor_id",
    "subject_type",
    "subject_id",
    "action",
    "trace_id",
    "publisher",
)
FILTERING: dict[str, tuple[str, ...]] = {
    "/v1/events": STRING_FILTERS,
    "/v1/events/export": STRING_FILTERS,
    "/v1/stats/buckets": STRING_FILTERS,
    "/v1/events/tail": ("service", "type"),
}
SQL = [
    "' OR '1'='1",
    "x' OR 1=1 --",
    "'; DROP TABLE events; --",
    '" OR ""="',
    "%",
    "_",
    "%%",
    "\\",
    "\\%",
    "billing' UNION SELECT * FROM api_keys --",
    "$1",
    "*",
]


def refused(result: testing.Result, status: int) -> dict[str, Any]:
    """The answer is `status` with the API's error body; returns the body."""
    assert result.status_code == status, (result.status_code, result.text[:500])
    assert result.headers["content-type"] == "application/json"
    body = result.json
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["description"], str)
    assert body["description"]
    if status == 422:
        assert body["errors"]
        for error in body["errors"]:
            assert set(error) == {"index", "field", "message"}
    return body


def problem_fields(result: testing.Result) -> list[str]:
    return [error["field"] for error in refused(result, 422)["errors"]]


@dataclass
class Edge:
    nginx: NginxProcess
    api: ApiInstance


@pytest.fixture(scope="module")
def edge(settings: Settings, logs_dir: Path) -> Iterator[Edge]:
    """nginx in front of one gunicorn instance, as deployed, on the session's database."""
    api = ApiInstance(settings, logs_dir, f"hostile-{uuid.uuid4().hex[:4]}", workers=1)
    nginx = NginxProcess(settings, [api.address, api.address], "127.0.0.1:9", logs_dir)
    try:
        api.start()
        nginx.start()
        yield Edge(nginx, api)
    finally:
        nginx.stop()
        api.stop()
        nginx.remove()


@pytest.fixture(params=["app", "nginx"])
def target(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def api(app: Any, tokens: Tokens, worker: WorkerProcess) -> testing.TestClient:
    """In-process, with a worker storing what is accepted (for the module's own fixtures;
    the conftest's `api` would depend on the `client` below)."""
    return authorized(app, tokens.admin)


@pytest.fixture
def client(client: testing.TestClient, target: str, tokens: Tokens, request: Any) -> Any:
    """The session's admin client, in-process or through nginx."""
    if target == "app":
        return client
    edge = request.getfixturevalue("edge")
    return HttpClient(edge.nginx.address, {"Authorization": f"Bearer {tokens.admin}"})


@pytest.fixture
def anonymous(anonymous: testing.TestClient, target: str, request: Any) -> Any:
    if target == "app":
        return anonymous
    return HttpClient(request.getfixturevalue("edge").nginx.address)


# nginx's own error log: a line at these levels is one an operator is paged for.
SERIOUS = re.compile(r"\[(error|crit|alert|emerg)\]")


@pytest.fixture(autouse=True)
def no_errors_logged(server_log: LogCapture, target: str, request: Any) -> Iterator[None]:
    """Refusing bad input is routine: the app logs nothing worse than its request line, and
    nginx nothing at error level."""
    if target == "app":
        yield
        assert not server_log.problems(), server_log.problems()[:3]
        return
    edge: Edge = request.getfixturevalue("edge")
    logs = (edge.api.log_path, edge.nginx.log_path, edge.nginx.access_log)
    offsets = [path.stat().st_size if path.exists() else 0 for path in logs]
    yield

    def seen() -> bool:
        # nginx's access log line, written once the exchange is over (the app's own line,
        # for a refusal, comes before it).
        access_log = _read_from(logs[2], offsets[2])
        return bool(json_lines_of(access_log))

    wait_for(seen, timeout=5, what="the request in nginx's access log")
    api_log, nginx_log = (_read_from(p, o) for p, o in zip(logs[:2], offsets[:2], strict=True))
    records = json_lines_of(api_log)
    problems = [r for r in records if r.get("level") in ("error", "critical") or "exception" in r]
    assert not problems, problems[:3]
    assert "Traceback (most recent call last)" not in api_log
    serious = [line for line in nginx_log.splitlines() if SERIOUS.search(line)]
    # nginx's one client error it logs at error level, whatever error_log says: a body over
    # client_max_body_size (the access log has its 413 too).
    serious = [line for line in serious if "client intended to send too large body" not in line]
    assert not serious, serious


def _read_from(path: Path, offset: int) -> str:
    if not path.exists():
        return ""
    with path.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def json_lines_of(text: str) -> list[dict[str, Any]]:
    records = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                records.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
    return records


@pytest.mark.parametrize("target", ["app"], indirect=True)  # the app's own log, in-process
class TestRequestLines:
    """A refused request is logged with its reason; an accepted one is not (nginx's access
    log has every request; the app adds what only it knows)."""

    def test_refused_is_logged_with_its_reason(
        self, client: testing.TestClient, server_log: LogCapture
    ):
        result = client.simulate_get("/v1/events", query_string="limit=0")
        assert result.status_code == 400
        lines = [r for r in server_log.records() if r.get("event") == "request"]
        assert [(r["status"], r["refused"], r["level"]) for r in lines] == [
            (400, "Invalid query parameter", "info")
        ]
        assert lines[0]["request_id"] == result.headers["x-request-id"]

    def test_answered_is_not_logged(self, client: testing.TestClient, server_log: LogCapture):
        assert client.simulate_get("/v1/events", query_string="limit=1").status_code == 200
        assert not [r for r in server_log.records() if r.get("event") == "request"]


def get(client: testing.TestClient, path: str, query: str) -> testing.Result:
    """GET with a raw query string (percent-escapes sent as written)."""
    base = "&".join(f"{k}={v}" for k, v in GET_ENDPOINTS.get(path, {}).items())
    return client.simulate_get(path, query_string="&".join(p for p in (base, query) if p))


class TestBody:
    """POST /v1/events."""

    @pytest.mark.parametrize(
        ("body", "words"),
        [
            (b"{", "not valid JSON"),
            (b'{"type": "a",}', "not valid JSON"),
            (b"", "empty"),
            (b"[]", "array is empty"),
            (b"42", "must be an event object"),
            (b'"an event"', "must be an event object"),
            (b'{"data": {"x": NaN}}', "not valid JSON"),
            (b'{"data": {"x": "\\ud800"}}', "not valid JSON"),
        ],
    )
    def test_not_json_or_not_events(self, client: testing.TestClient, body: bytes, words: str):
        assert words in refused(post(client, body), 400)["description"]

    @pytest.mark.parametrize(
        "body",
        [
            b'{"type": "\xff"}',
            b"\xfe\xff{}",
            b'{"type": "a", "data": {"x": "\xc0\x80"}}',  # an overlong U+0000
            b'{"type": "a", "data": {"x": "\xed\xa0\x80"}}',  # a UTF-8 encoded surrogate
        ],
    )
    def test_invalid_utf8(self, client: testing.TestClient, body: bytes):
        assert "not valid JSON" in refused(post(client, body), 400)["description"]

    @pytest.mark.parametrize(
        "content_type",
        [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/json; charset=latin-1",
            "application/jsonx",
            ";;;===",
            "application/json\u00e9",
        ],
    )
    def test_wrong_content_type(self, client: testing.TestClient, content_type: str):
        refused(post(client, factories.event(), content_type=content_type), 415)

    def test_no_content_type(self, client: testing.TestClient):
        result = client.simulate_post("/v1/events", body=orjson.dumps(factories.event()))
        assert "Content-Type" in refused(result, 415)["description"]

    def test_too_many_events(self, client: testing.TestClient, settings: Any):
        count = settings.max_events_per_request + 1
        assert "limit" in refused(post(client, factories.events(count)), 413)["description"]

    def test_body_too_large(self, client: testing.TestClient, settings: Any):
        body = b" " * settings.max_body_bytes + b"{}"
        assert "limit" in refused(post(client, body), 413)["description"]

    def test_huge_data(self, client: testing.TestClient, settings: Any):
        data = {f"k{n}": "v" * 1000 for n in range(settings.max_data_bytes // 1000 + 1)}
        result = post(client, factories.event(data=data))
        assert problem_fields(result) == ["data"]
        assert "bytes serialized" in result.json["errors"][0]["message"]

    def test_long_string(self, client: testing.TestClient, settings: Any):
        long = "x" * (settings.max_string_chars + 1)
        result = post(client, factories.event(data={"note": long}, context={"host": long}))
        assert sorted(problem_fields(result)) == ["context.host", "data.note"]

    def test_nesting_deeper_than_allowed_names_the_field(
        self, client: testing.TestClient, settings: Any
    ):
        nested: dict[str, Any] = {"leaf": 1}
        for _ in range(settings.max_depth + 5):
            nested = {"a": nested}
        fields = problem_fields(post(client, factories.event(data=nested)))
        assert len(fields) == 1
        assert fields[0].startswith("data.a.a.a")

    @pytest.mark.parametrize("opening", [b"[", b'{"a":'])
    def test_nesting_past_the_parsers_own_limit(self, client: testing.TestClient, opening: bytes):
        depth = 100_000
        closing = b"]" if opening == b"[" else b"}"
        body = opening * depth + b"1" + closing * depth
        assert "nested too deeply" in refused(post(client, body), 400)["description"]

    @pytest.mark.parametrize(
        ("path", "value"),
        [
            ("id", 12345),
            ("type", 1),
            ("service", 2),
            ("occurred_at", 1767225600),
            ("action", 3.5),
            ("outcome", 0),
            ("actor.id", 4),
            ("actor.type", 5),
            ("subject.id", 6),
            ("subject.type", True),
        ],
    )
    def test_a_number_where_a_string_belongs(
        self, client: testing.TestClient, path: str, value: Any
    ):
        event = factories.event()
        head, _, tail = path.partition(".")
        if tail:
            event[head][tail] = value
        else:
            event[head] = value
        assert problem_fields(post(client, event)) == [path]

    @pytest.mark.parametrize(
        "attribute",
        ["id", "source", "type", "time", "subject", "subjecttype", "actorid", "actortype"],
    )
    def test_a_number_where_a_string_belongs_in_a_cloudevent(
        self, client: testing.TestClient, attribute: str
    ):
        result = post(
            client,
            factories.cloudevent(**{attribute: 7}),
            content_type="application/cloudevents+json",
        )
        fields = problem_fields(result)
        assert fields
        assert all(field.startswith(attribute) for field in fields), fields

    def test_nul_anywhere_in_an_event_is_refused_at_the_door(
        self, client: testing.TestClient, owner_db: Engine, worker: object
    ):
        """U+0000 (sent as the JSON escape \\u0000) in every part of an event: each is
        named, and nothing of the request reaches the stream, so the writer never sees it."""
        variants: list[tuple[dict[str, Any], str]] = [
            (factories.event(type=f"customer{NUL}.billed"), "type"),
            (factories.event(service=f"bill{NUL}ing"), "service"),
            (factories.event(action=f"bill{NUL}"), "action"),
            (factories.event(id=f"{EVENT_ID[:-1]}{NUL}"), "id"),
            (factories.event(occurred_at=f"2026-01-01T00:00:00Z{NUL}"), "occurred_at"),
            (factories.event(actor={"id": f"u{NUL}1", "type": "user"}), "actor.id"),
            (factories.event(actor={"id": "u1", "type": f"user{NUL}"}), "actor.type"),
            (factories.event(actor={"id": "u1", "email": f"a{NUL}@b"}), "actor.email"),
            (factories.event(actor={"id": "u1", f"e{NUL}": "x"}), "actor"),
            (factories.event(subject={"id": f"c{NUL}", "type": "customer"}), "subject.id"),
            (factories.event(subject={"id": "c", "type": "customer", f"k{NUL}": 1}), "subject"),
            (factories.event(context={"host": f"h{NUL}"}), "context.host"),
            (factories.event(context={f"h{NUL}": "h"}), "context"),
            (factories.event(data={"card": f"4111{NUL}"}), "data.card"),
            (factories.event(data={f"ca{NUL}rd": "4111"}), "data"),
            (factories.event(data={"a": [{"b": ["ok", f"x{NUL}"]}]}), "data.a.0.b.1"),
            (factories.event(data={"a": {"b": {f"c{NUL}": 1}}}), "data.a.b"),
            ({**factories.event(), f"extra{NUL}": 1}, f"extra{NUL}"),
        ]
        good = factories.event()
        result = post(client, [*(event for event, _ in variants), good])
        errors = refused(result, 422)["errors"]
        found = {(error["index"], error["field"]) for error in errors}
        for index, (_, field) in enumerate(variants):
            assert (index, field) in found, (field, errors)
        assert len(errors) == len(variants) + 1  # the type has a pattern error too
        # All or nothing: not even the good event of the request was queued.
        marker = factories.event()
        assert post(client, marker).status_code == 202
        wait_stored(owner_db, [marker["id"]])
        assert stored_counts(owner_db, [good["id"]]) == {}

    def test_nul_in_a_cloudevent(self, client: testing.TestClient):
        result = post(
            client,
            [
                factories.cloudevent(id=f"evt{NUL}1"),
                factories.cloudevent(data={"x": f"y{NUL}"}),
                {**factories.cloudevent(), f"ext{NUL}": "v"},
            ],
            content_type="application/cloudevents-batch+json",
        )
        fields = problem_fields(result)
        assert fields == ["context.cloudevents_id", "data.x", "context"]


class TestSpellings:
    """Every spelling of every GET endpoint, with a key: answered as the route or refused in
    the API's shape, never a 5xx. Through nginx, what it routes as the route itself gets the
    route's own answer."""

    @pytest.mark.parametrize("path", GET_ENDPOINTS)
    def test_every_spelling(self, client: Any, target: str, path: str):
        params = GET_ENDPOINTS[path]
        exact = client.simulate_get(path, params=params)
        for kind, spelled in spellings(path):
            if kind == "query" and params:
                continue  # the parameters are the query
            if target == "app" and not spelled.startswith("/"):
                continue  # no server hands an app such a path (test_front_door tries one)
            result = client.simulate_get(spelled, params=params)
            where = f"{target}: {spelled} ({kind}) -> {result.status_code}"
            assert result.status_code < 500, (where, result.text[:300])
            if result.status_code >= 400:
                refused(result, result.status_code)
            if target == "nginx" and kind in CANONICALISED:
                assert result.status_code == exact.status_code, where


class TestQueryString:
    """Every GET endpoint: what cannot be read, what is not known, what is given twice."""

    @pytest.mark.parametrize("path", GET_ENDPOINTS)
    @pytest.mark.parametrize(
        ("query", "named"),
        [
            ("service=%FF", "service"),
            ("service=%C0%80", "service"),  # an overlong U+0000
            ("service=ok%ED%A0%80", "service"),  # an encoded surrogate
            ("%FF=x", "query string"),
        ],
    )
    def test_invalid_utf8(self, client: testing.TestClient, path: str, query: str, named: str):
        body = refused(get(client, path, query), 400)
        assert body["description"].startswith(f"{named}: ")
        assert "UTF-8" in body["description"]

    @pytest.mark.parametrize("path", GET_ENDPOINTS)
    def test_unknown_parameter(self, client: testing.TestClient, path: str):
        body = refused(get(client, path, "colour=blue"), 400)
        assert body["description"].startswith("colour: unknown parameter")

    @pytest.mark.parametrize(
        ("path", "name"),
        [
            ("/v1/events", "service"),
            ("/v1/events/tail", "service"),
            ("/v1/events/tail", "follow"),
            ("/v1/events/export", "format"),
            ("/v1/stats/buckets", "width"),
            (f"/v1/events/{EVENT_ID}/proof", "tree_size"),
            ("/v1/integrity/tree-head", "size"),
            ("/v1/integrity/consistency", "first"),
        ],
    )
    def test_repeated_and_empty_parameters(self, client: testing.TestClient, path: str, name: str):
        value = {"follow": "false", "format": "csv", "width": "1h"}.get(name, "1")
        if name == "first":
            path_query = "second=2"
            repeated = f"{path_query}&first=1&first=1"
            empty = f"{path_query}&first="
            description = refused(client.simulate_get(path, query_string=repeated), 400)
            assert description["description"] == "first: is given more than once"
            body = refused(client.simulate_get(path, query_string=empty), 400)
        else:
            body = refused(get(client, path, f"{name}={value}&{name}={value}"), 400)
            assert body["description"] == f"{name}: is given more than once"
            body = refused(get(client, path, f"{name}="), 400)
        assert body["description"].startswith(f"{name}: ")

    @pytest.mark.parametrize("raw", [b"/v1/events/%FF%FE", b"/v1/events/%C0%80/proof"])
    def test_invalid_utf8_in_the_path(self, client: testing.TestClient, raw: bytes):
        # What an ASGI server hands over for /v1/events/%FF%FE: the path as sent in
        # raw_path (the decoded `path` has U+FFFD); Falcon's test client would decode the
        # escapes itself, so the scope is set directly.
        result = client.simulate_get("/v1/events/x", extras={"raw_path": raw})
        assert refused(result, 400)["description"] == "the path is not valid UTF-8"

    @pytest.mark.parametrize("path", FILTERING)
    def test_nul_in_every_filter(self, client: testing.TestClient, path: str):
        ranged = () if path == "/v1/events/tail" else ("since", "until")
        for name in (*FILTERING[path], *ranged):
            params = {**GET_ENDPOINTS[path], name: "a\x00b"}
            body = refused(client.simulate_get(path, params=params), 400)
            assert body["description"] == f"{name}: contains U+0000", body

    @pytest.mark.parametrize(
        ("path", "name"),
        [
            ("/v1/events", "cursor"),
            ("/v1/events", "limit"),
            ("/v1/events", "order"),
            ("/v1/events/export", "format"),
            ("/v1/events/tail", "limit"),
            ("/v1/stats/buckets", "width"),
            ("/v1/stats/buckets", "group_by"),
            ("/v1/integrity/tree-head", "size"),
            (f"/v1/events/{EVENT_ID}/proof", "tree_size"),
        ],
    )
    def test_nul_in_other_parameters(self, client: testing.TestClient, path: str, name: str):
        assert refused(get(client, path, f"{name}=%00"), 400)["description"].startswith(name)

    @pytest.mark.parametrize("path", ["/v1/events", "/v1/events/export", "/v1/stats/buckets"])
    def test_since_after_until(self, client: testing.TestClient, path: str):
        query = "since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z"
        result = client.simulate_get(path, query_string=query)
        assert "earlier than until" in refused(result, 400)["description"]

    @pytest.mark.parametrize("path", ["/v1/events", "/v1/events/export", "/v1/stats/buckets"])
    @pytest.mark.parametrize("value", ["yesterday", "2026-01-01", "2026-13-01T00:00:00Z", "1e9"])
    def test_malformed_timestamps(self, client: testing.TestClient, path: str, value: str):
        query = {"since": "2026-01-01T00:00:00Z", "until": value}
        result = client.simulate_get(path, params=query)
        assert refused(result, 400)["description"].startswith("until: ")

    def test_the_edges_of_the_calendar(self, client: testing.TestClient):
        at_the_end = {"since": "9999-12-31T00:00:00Z", "until": "9999-12-31T23:00:00Z"}
        answer = client.simulate_get("/v1/stats/buckets", params={**at_the_end, "width": "1d"})
        assert answer.status_code == 200, answer.text
        assert answer.json["buckets"] == [{"start": "9999-12-31T00:00:00.000000Z", "count": 0}]
        at_the_start = {"since": "0001-01-01T00:00:00Z", "until": "0001-01-09T00:00:00Z"}
        result = client.simulate_get("/v1/stats/buckets", params={**at_the_start, "width": "5d"})
        assert "too early" in refused(result, 400)["description"]


@pytest.fixture(scope="module")
def cursor(api: testing.TestClient, owner_db: Engine) -> str:
    """A real cursor, of the first page of a query with more."""
    sent = factories.events(3, service="cursor-test")
    post(api, sent)
    wait_stored(owner_db, [e["id"] for e in sent])
    page = api.simulate_get("/v1/events", params={"service": "cursor-test", "limit": 1})
    assert page.status_code == 200
    return str(page.json["next_cursor"])


class TestCursor:
    @pytest.mark.parametrize(
        "make",
        [
            lambda c: "garbage!",
            lambda c: c[: len(c) // 2],
            lambda c: c[:-2],
            lambda c: c + "AAAA",
            lambda c: base64.urlsafe_b64encode(b'{"v":1}').decode(),
            lambda c: base64.urlsafe_b64encode(b"\xff\xfe\x00").decode(),
            lambda c: c.replace(c[5], "A" if c[5] != "A" else "B", 1),
        ],
        ids=["garbage", "half", "truncated", "extended", "other-json", "binary", "altered"],
    )
    def test_a_broken_cursor(self, client: testing.TestClient, cursor: str, make: Any):
        query = {"service": "cursor-test", "limit": 1, "cursor": make(cursor)}
        result = client.simulate_get("/v1/events", params=query)
        assert refused(result, 400)["description"].startswith("cursor: ")

    @pytest.mark.parametrize(
        "other",
        [{"service": "billing"}, {"service": "cursor-test", "order": "asc"}, {}],
        ids=["other-filters", "other-order", "no-filters"],
    )
    def test_a_cursor_from_another_query(
        self, client: testing.TestClient, cursor: str, other: dict[str, str]
    ):
        result = client.simulate_get("/v1/events", params={**other, "cursor": cursor})
        assert refused(result, 400)["description"].startswith("cursor: was issued for")


@pytest.fixture(scope="module")
def probes(api: testing.TestClient, owner_db: Engine) -> None:
    """Stored events that a filter gone wrong would match."""
    sent = [factories.event(), factories.event(type="sql.probe", service="sql-probe")]
    post(api, sent)
    wait_stored(owner_db, [e["id"] for e in sent])


@pytest.mark.usefixtures("probes")
class TestSqlMetacharacters:
    """Filter values are data: they match nothing, on every endpoint that filters."""

    @pytest.mark.parametrize("value", SQL)
    @pytest.mark.parametrize("path", FILTERING)
    def test_match_nothing(self, client: testing.TestClient, path: str, value: str):
        for name in FILTERING[path]:
            if name == "type" and value == "*":
                continue  # the prefix syntax; a bare * is refused (below)
            params = {name: value, **GET_ENDPOINTS[path]}
            result = client.simulate_get(path, params=params)
            assert result.status_code == 200, (name, value, result.text)
            if path == "/v1/stats/buckets":
                assert {b["count"] for b in result.json["buckets"]} == {0}, (name, value)
            elif path == "/v1/events/export":
                assert result.content == b"", (name, value)
            else:
                assert result.json["events"] == [], (name, value)

    def test_a_bare_star_is_not_a_prefix(self, client: testing.TestClient):
        for path in FILTERING:
            params = {**GET_ENDPOINTS[path], "type": "*"}
            body = refused(client.simulate_get(path, params=params), 400)
            assert body["description"].startswith("type: a prefix must come before the *")

    @pytest.mark.parametrize("last", ["\U0010ffff", "\ud7ff", "\U0010ffff\U0010ffff", "\uffff"])
    def test_a_prefix_ending_at_the_edge_of_unicode(self, client: testing.TestClient, last: str):
        # The range's upper bound steps past the prefix's last character: past U+10FFFF
        # there is none, and after U+D7FF come the surrogates, which are not characters.
        for path in FILTERING:
            params = {**GET_ENDPOINTS[path], "type": f"a{last}*"}
            result = client.simulate_get(path, params=params)
            assert result.status_code == 200, (path, last, result.text)

    def test_a_type_prefix_is_literal(self, client: testing.TestClient):
        for value in ("%*", "_*", "sql_probe*", "sql%*", "'*"):
            result = client.simulate_get("/v1/events", params={"type": value})
            assert result.json["events"] == [], value
        found = client.simulate_get("/v1/events", params={"type": "sql.*"}).json["events"]
        assert {e["type"] for e in found} == {"sql.probe"}  # the probe does exist

    @pytest.mark.parametrize("path", ["/v1/events", "/v1/events/export", "/v1/stats/buckets"])
    @pytest.mark.parametrize("value", SQL[:4])
    def test_enum_like_parameters_are_a_400(
        self, client: testing.TestClient, path: str, value: str
    ):
        for name in ("outcome", "since"):
            params = {**GET_ENDPOINTS[path], name: value}
            assert refused(client.simulate_get(path, params=params), 400)["description"].startswith(
                f"{name}: "
            )


def at_the_door(target: str, value: str) -> int | None:
    """What nginx answers itself for a header it does not pass on (a NUL: 400; a line over
    8 KiB: 431), or None where the app answers."""
    if target != "nginx":
        return None
    if NUL in value:
        return 400
    if len(value) > 8000:
        return 431
    return None


class TestHeaders:
    @pytest.mark.parametrize(
        "value",
        [
            "Bearer alk_\xff\xfe",
            "Bearer " + "x" * 100_000,
            "Bearer alk_" + NUL,
            "Bearer\tsomething",
            "\xff",
        ],
        ids=["latin1", "huge", "nul", "tab", "junk"],
    )
    def test_bad_authorization_is_401(self, anonymous: Any, target: str, value: str):
        result = anonymous.simulate_get("/v1/events", headers={"Authorization": value})
        if door := at_the_door(target, value):
            refused(result, door)
        else:
            assert refused(result, 401)["title"] == "Unauthorized"

    def test_a_junk_request_id_is_replaced(self, client: Any, target: str):
        for junk in ("\xff\xfe", "a" * 129, "with space", NUL, "x" * 100_000):
            result = client.simulate_get("/v1/events", headers={"X-Request-ID": junk})
            if door := at_the_door(target, junk):
                refused(result, door)
            else:
                assert result.status_code == 200
            assert result.headers["x-request-id"] != junk
            assert len(result.headers["x-request-id"]) == 32

    @pytest.mark.parametrize("value", ["\xff", "12\x00", "x" * 10_000, "-5", "1e3"])
    def test_a_junk_last_event_id_is_400(self, client: Any, target: str, value: str):
        result = client.simulate_get(
            "/v1/events/tail", params={"follow": "true"}, headers={"Last-Event-ID": value}
        )
        if door := at_the_door(target, value):
            refused(result, door)
        else:
            assert refused(result, 400)["description"].startswith("Last-Event-ID: ")

    def test_a_junk_if_none_match_is_a_full_answer(self, client: Any, target: str):
        for junk in ("\xff", 'W/"' + "x" * 10_000 + '"', NUL, ","):
            result = client.simulate_get("/v1/events/tail", headers={"If-None-Match": junk})
            if door := at_the_door(target, junk):
                refused(result, door)
                continue
            assert result.status_code == 200
            assert "events" in result.json
