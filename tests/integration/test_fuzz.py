"""Property-based fuzzing of the whole API with schemathesis, driven by the app's own OpenAPI
document, through the real app (PostgreSQL, Redis, the session's worker), as an admin.

Seeded and bounded: the same cases every run, MAX_EXAMPLES per operation and generation mode
plus schemathesis's coverage cases (boundaries, missing and wrong-typed parameters, other
methods). Every answer must be documented (status, content type, headers, body schema), no
answer may be a 5xx, schema-violating input must be refused, auth must be enforced, and the
server must log no error or traceback. What the fuzzer got accepted must be stored by the
worker without a single dead letter.

It runs twice: in-process (the WSGI app, MAX_EXAMPLES) and through nginx and one gunicorn
instance as deployed (real HTTP, EDGE_MAX_EXAMPLES: what this adds is two real servers'
parsing and nginx's own refusals, not more generated input). Through nginx each case is also
sent once more with its path respelled (tests/spellings.py), byte for byte: refused or
answered, never a 5xx, every error in the API's shape.
"""

from __future__ import annotations

import re
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from falcon import testing
from falcon.util import async_to_sync
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)
from sqlalchemy import Engine

from auditlog.app import create_app
from auditlog.openapi import build_openapi
from auditlog.runtime import ApiRuntime
from auditlog.settings import Settings
from tests.helpers import WorkerProcess, event_stream, wait_for
from tests.integration.conftest import (
    SUMMARY,
    TEST_OVERRIDES,
    LogCapture,
    Tokens,
    wait_stored,
)
from tests.spellings import spellings
from tests.topology import ApiInstance, NginxProcess, exchange, json_lines

SEED = 20261128
MAX_EXAMPLES = 100
# Measured: 2,340 cases with this seed and MAX_EXAMPLES; far fewer means generation broke.
MIN_CASES = 2000
# A follow stream (SSE) ends after this in the fuzzed app, so that a case takes a moment.
FOLLOW_S = 0.5
# Every refusal the API documents, 413 included: a body or an array over the limit is
# refused as too large, not as malformed (schemathesis's default list lacks it).
REFUSALS = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 429]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
    missing_required_header,
    unsupported_method,
    allow_header_conformance,
]


class ServedApp:
    """The ASGI app as schemathesis's WSGI transport sees it: each request simulated on
    Falcon's own test loop (the one the session's runtime belongs to), the whole answer
    read, the stream closed as a server closes it.

    schemathesis's own ASGI transport runs the app on an event loop of its own, where the
    session's database and Redis clients, bound to Falcon's test loop, cannot go. The app
    itself is set by the fixture, once the session's database and keys exist.
    """

    app: Any = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        headers = [
            (name[5:].replace("_", "-"), value)
            for name, value in environ.items()
            if name.startswith("HTTP_")
        ]
        for name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if environ.get(name):
                headers.append((name.replace("_", "-"), environ[name]))
        raw_path = environ.get("RAW_URI", "").split("?", 1)[0]
        path = raw_path or environ["PATH_INFO"].encode("latin-1").decode("utf-8", "replace")
        result = testing.simulate_request(
            self.app,
            environ["REQUEST_METHOD"],
            path,
            query_string=environ.get("QUERY_STRING") or None,
            headers=headers,
            body=body,
        )
        start_response(result.status, list(result.headers.items()))
        return [result.content]


SERVED = ServedApp()
# The document the app serves (the fixture checks it is the very same).
DOCUMENT = build_openapi(Settings.from_env({}, **{**TEST_OVERRIDES, "follow_max_s": FOLLOW_S}))


def fuzzed(max_examples: int) -> Any:
    """The served document as schemathesis reads it, seeded, with this many examples."""
    return schemathesis.openapi.from_dict(
        DOCUMENT,
        config=schemathesis.Config.from_dict(
            {
                "seed": SEED,
                "generation": {"mode": "all", "max-examples": max_examples, "database": "none"},
                "checks": {"negative_data_rejection": {"expected-statuses": REFUSALS}},
            }
        ),
    )


schema = fuzzed(MAX_EXAMPLES)
schema.app = SERVED
EDGE_MAX_EXAMPLES = 5
# Measured: 1,295 cases with this seed and EDGE_MAX_EXAMPLES (most are coverage cases), in
# 20-28 s, each sent twice.
EDGE_MIN_CASES = 1200
edge_schema = fuzzed(EDGE_MAX_EXAMPLES)


@dataclass
class Tally:
    cases: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    accepted: list[str] = field(default_factory=list)
    operations: set[str] = field(default_factory=set)
    # From the first case's start to the last one's end (generation included): both runs'
    # fixtures end with the module, together, so their own clocks would add the two up.
    first: float | None = None
    last: float = 0.0

    def timed(self) -> float:
        now = time.monotonic()
        self.first = now if self.first is None else self.first
        return now

    @property
    def seconds(self) -> float:
        return self.last - (self.first or self.last)


tally = Tally()
edge_tally = Tally()


@pytest.fixture(scope="module")
def fuzz_app(
    settings: Settings,
    worker: WorkerProcess,
    owner_db: Engine,
    production_logging: None,
    request: pytest.FixtureRequest,
) -> Iterator[Any]:
    fuzz_settings = settings.model_copy(update={"follow_max_s": FOLLOW_S})
    runtime = ApiRuntime.build(fuzz_settings)
    app = create_app(fuzz_settings, runtime=runtime)
    assert testing.TestClient(app).simulate_get("/openapi.json").json == DOCUMENT
    dead_before = event_stream(settings).dead_letter_count()
    SERVED.app = app
    with LogCapture() as log:
        yield app
    SERVED.app = None
    elapsed = tally.seconds
    try:
        total = sum(tally.cases.values())
        request.config.stash[SUMMARY].append(
            f"schemathesis: {total} cases (seed {SEED}, at most {MAX_EXAMPLES} examples per "
            f"operation and mode) in {elapsed:.1f} s; answers "
            f"{dict(sorted(tally.statuses.items()))}; {len(tally.accepted)} events accepted"
        )
        documented = sum(len(item) for item in DOCUMENT["paths"].values())
        if len(tally.operations) < documented:
            return  # only some operations ran (-k): no figures to hold them to
        assert total >= MIN_CASES, f"only {total} cases ran"
        assert not log.problems(), log.problems()[:3]
        # What was accepted is stored, and nothing the fuzzer sent (nor the audit records of
        # its reads) poisoned the writer.
        wait_stored(owner_db, tally.accepted, timeout=60)
        wait_for(lambda: event_stream(settings).depth() == 0, timeout=60, what="the stream drained")
        assert event_stream(settings).dead_letter_count() == dead_before
    finally:
        async_to_sync(runtime.close)


@schema.parametrize()
@hypothesis_settings(
    # Generous for a shared 2-core machine: a case is one in-process request (a follow
    # stream FOLLOW_S); a case that takes this long is a finding in itself.
    deadline=5000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@pytest.mark.timeout(600)
def test_api(case: Any, fuzz_app: Any, tokens: Tokens) -> None:
    tally.timed()
    tally.cases[f"{case.method} {case.path}"] += 1
    tally.operations.add(case.operation.label)
    try:
        response = case.call_and_validate(
            headers={"Authorization": f"Bearer {tokens.admin}"}, checks=CHECKS
        )
    finally:
        tally.last = time.monotonic()
    tally.statuses[response.status_code] += 1
    if response.status_code == 202:
        tally.accepted.extend(response.json()["ids"])


@dataclass
class FuzzEdge:
    nginx: NginxProcess
    api: ApiInstance


# nginx's error log: a line at these levels is one an operator is paged for; nginx logs a body
# over client_max_body_size at error level whatever error_log says (its access log has the 413).
SERIOUS = re.compile(r"\[(error|crit|alert|emerg)\]")
TOO_LARGE = "client intended to send too large body"


@pytest.fixture(scope="module")
def fuzz_edge(
    settings: Settings,
    worker: WorkerProcess,
    owner_db: Engine,
    logs_dir: Path,
    request: pytest.FixtureRequest,
) -> Iterator[FuzzEdge]:
    fuzz_settings = settings.model_copy(update={"follow_max_s": FOLLOW_S})
    api = ApiInstance(fuzz_settings, logs_dir, f"fuzz-{uuid.uuid4().hex[:4]}", workers=1)
    nginx = NginxProcess(fuzz_settings, [api.address, api.address], "127.0.0.1:9", logs_dir)
    try:
        api.start()
        nginx.start()
        assert requests.get(nginx.url("/openapi.json"), timeout=10).json() == DOCUMENT
        dead_before = event_stream(settings).dead_letter_count()
        yield FuzzEdge(nginx, api)
        elapsed = edge_tally.seconds
        total = sum(edge_tally.cases.values())
        request.config.stash[SUMMARY].append(
            f"schemathesis through nginx: {total} cases (at most {EDGE_MAX_EXAMPLES} examples "
            f"per operation and mode), each also respelled, in {elapsed:.1f} s; answers "
            f"{dict(sorted(edge_tally.statuses.items()))}; {len(edge_tally.accepted)} events "
            "accepted"
        )
        documented = sum(len(item) for item in DOCUMENT["paths"].values())
        if len(edge_tally.operations) < documented:
            return  # only some operations ran (-k): no figures to hold them to
        assert total >= EDGE_MIN_CASES, f"only {total} cases ran"
        api_log = api.log_path.read_text(errors="replace")
        assert "Traceback (most recent call last)" not in api_log
        problems = [
            line
            for line in json_lines(api.log_path)
            if line.get("level") in ("error", "critical") or "exception" in line
        ]
        assert not problems, problems[:3]
        serious = [
            line
            for line in nginx.log_path.read_text(errors="replace").splitlines()
            if SERIOUS.search(line) and TOO_LARGE not in line
        ]
        assert not serious, serious[:3]
        wait_stored(owner_db, edge_tally.accepted, timeout=60)
        wait_for(lambda: event_stream(settings).depth() == 0, timeout=60, what="the stream drained")
        assert event_stream(settings).dead_letter_count() == dead_before
    finally:
        nginx.stop()
        api.stop()
        nginx.remove()


def respelled(response: Any, index: int) -> tuple[str, str, str, dict[str, str], bytes]:
    """The request a case sent, its path spelled the index-th way: (kind, method, target,
    headers, body)."""
    sent = response.request
    url = urllib.parse.urlsplit(sent.url)
    options = spellings(url.path)
    kind, path = options[index % len(options)]
    target = f"{path}?{url.query}" if url.query and not path.endswith("?") else path
    skip = {"host", "content-length", "connection"}
    headers = {k: v for k, v in sent.headers.items() if k.lower() not in skip}
    body = sent.body or b""
    return kind, sent.method, target, headers, body.encode() if isinstance(body, str) else body


@edge_schema.parametrize()
@hypothesis_settings(
    deadline=5000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@pytest.mark.timeout(600)
def test_api_through_nginx(case: Any, fuzz_edge: FuzzEdge, tokens: Tokens) -> None:
    edge_tally.timed()
    try:
        fuzz_through_nginx(case, fuzz_edge, tokens)
    finally:
        edge_tally.last = time.monotonic()


def fuzz_through_nginx(case: Any, fuzz_edge: FuzzEdge, tokens: Tokens) -> None:
    """One case, then the same request with its path respelled."""
    index = sum(edge_tally.cases.values())
    edge_tally.cases[f"{case.method} {case.path}"] += 1
    edge_tally.operations.add(case.operation.label)
    response = case.call_and_validate(
        base_url=fuzz_edge.nginx.url(""),
        headers={"Authorization": f"Bearer {tokens.admin}"},
        checks=CHECKS,
    )
    edge_tally.statuses[response.status_code] += 1
    if response.status_code == 202:
        edge_tally.accepted.extend(response.json()["ids"])
    kind, method, target, headers, body = respelled(response, index)
    again = exchange(fuzz_edge.nginx.address, method, target, headers, body)
    where = f"{method} {target} ({kind}) -> {again.status}: {again.body[:200]!r}"
    assert again.status < 500, where
    if again.status >= 400:
        assert again.headers.get_content_type() == "application/json", where
        problem = again.json()
        assert {"title", "description"} <= set(problem) <= {"title", "description", "errors"}, where
    elif again.status == 202:
        edge_tally.accepted.extend(again.json()["ids"])
