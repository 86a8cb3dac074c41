"""/openapi.json describes exactly the routes the app serves, and the answers they give."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from falcon import inspect, testing
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from sqlalchemy import Engine

from auditlog.app import create_app
from auditlog.runtime import ApiRuntime
from auditlog.settings import Settings
from tests import factories
from tests.integration.conftest import post, wait_stored


@pytest.fixture(scope="module")
def document(client: testing.TestClient) -> dict[str, Any]:
    result = client.simulate_get("/openapi.json")
    assert result.status_code == 200
    return result.json


def check(document: dict[str, Any], path: str, method: str, result: testing.Result) -> None:
    """The answer's status is documented for the operation and its body fits the schema."""
    operation = document["paths"][path][method.lower()]
    status = str(result.status_code)
    assert status in operation["responses"], f"{method} {path} answered undocumented {status}"
    content = operation["responses"][status].get("content", {})
    if not content:
        assert result.content == b"", f"{method} {path} {status} has an undocumented body"
        return
    media_type = result.headers.get("content-type", "").split(";")[0]
    documented = {name.split(";")[0] for name in content}
    assert media_type in documented, f"{method} {path} {status} answered {media_type}"
    if media_type != "application/json":
        return
    schema = content["application/json"]["schema"]
    registry = Registry().with_resource(
        "urn:doc",
        Resource.from_contents(
            {**document, "$schema": "https://json-schema.org/draft/2020-12/schema"}
        ),
    )
    validator = Draft202012Validator(_rebase(schema), registry=registry)
    errors = sorted(validator.iter_errors(result.json), key=str)
    assert not errors, f"{method} {path} {status}: {errors[0].message}"


def _rebase(schema: Any) -> Any:
    """Point local $refs at the whole document held in the registry."""
    if isinstance(schema, dict):
        return {
            k: ("urn:doc" + v if k == "$ref" and v.startswith("#") else _rebase(v))
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [_rebase(v) for v in schema]
    return schema


class TestDocument:
    def test_is_openapi_31_with_valid_schemas(self, document: dict[str, Any]):
        assert document["openapi"] == "3.1.0"
        for name, schema in document["components"]["schemas"].items():
            Draft202012Validator.check_schema(schema)
            assert name

    def test_routes_match_the_app(
        self, document: dict[str, Any], settings: Settings, runtime: ApiRuntime
    ):
        app = create_app(settings, runtime=runtime)
        # OpenAPI names a path parameter without Falcon's converter ({asset:path} -> {asset}).
        served = {
            (re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path), method.method.lower())
            for route in inspect.inspect_routes(app)
            for method in route.methods
            if not method.internal and method.method != "OPTIONS"
        }
        documented = {(path, method) for path, item in document["paths"].items() for method in item}
        assert served == documented


class TestAnswersFitTheDocument:
    def test_post_answers(self, client: testing.TestClient, document: dict[str, Any]):
        check(document, "/v1/events", "POST", post(client, factories.event()))
        check(document, "/v1/events", "POST", post(client, [factories.event(type="X")]))
        check(document, "/v1/events", "POST", post(client, b"{"))
        check(document, "/v1/events", "POST", post(client, factories.events(1001)))
        check(
            document,
            "/v1/events",
            "POST",
            post(client, factories.event(), content_type="text/plain"),
        )
        check(
            document,
            "/v1/events",
            "POST",
            post(
                client, [factories.cloudevent()], content_type="application/cloudevents-batch+json"
            ),
        )

    def test_get_answers(self, api: testing.TestClient, document: dict[str, Any]):
        sent = factories.event()
        post(api, sent)
        check(document, "/v1/events", "GET", api.simulate_get("/v1/events", params={"limit": 5}))
        check(document, "/v1/events", "GET", api.simulate_get("/v1/events", params={"limit": 0}))
        check(
            document, "/v1/events/{event_id}", "GET", api.simulate_get(f"/v1/events/{uuid.uuid4()}")
        )
        check(
            document,
            "/v1/stats/buckets",
            "GET",
            api.simulate_get(
                "/v1/stats/buckets",
                params={
                    "since": "2026-01-01T00:00:00Z",
                    "until": "2026-01-02T00:00:00Z",
                    "group_by": "type",
                },
            ),
        )
        check(document, "/v1/stats/buckets", "GET", api.simulate_get("/v1/stats/buckets"))
        check(document, "/healthz", "GET", api.simulate_get("/healthz"))
        check(document, "/readyz", "GET", api.simulate_get("/readyz"))

    def test_stored_event_fits(
        self, api: testing.TestClient, document: dict[str, Any], owner_db: Engine
    ):
        sent = factories.event()
        post(api, sent)
        wait_stored(owner_db, [sent["id"]])
        check(
            document, "/v1/events/{event_id}", "GET", api.simulate_get(f"/v1/events/{sent['id']}")
        )


class TestIntegrityAnswersFit:
    def test_integrity_answers(
        self, api: testing.TestClient, document: dict[str, Any], owner_db: Engine
    ):
        sent = factories.events(3)
        post(api, sent)
        wait_stored(owner_db, [e["id"] for e in sent])
        head = api.simulate_get("/v1/integrity/tree-head")
        check(document, "/v1/integrity/tree-head", "GET", head)
        size = head.json["tree_size"]
        check(
            document,
            "/v1/integrity/tree-head",
            "GET",
            api.simulate_get("/v1/integrity/tree-head", params={"size": "x"}),
        )
        check(
            document,
            "/v1/events/{event_id}/proof",
            "GET",
            api.simulate_get(f"/v1/events/{sent[0]['id']}/proof"),
        )
        check(
            document,
            "/v1/events/{event_id}/proof",
            "GET",
            api.simulate_get(f"/v1/events/{sent[0]['id']}/proof", params={"tree_size": 10**12}),
        )
        check(
            document,
            "/v1/integrity/consistency",
            "GET",
            api.simulate_get("/v1/integrity/consistency", params={"first": 1, "second": size}),
        )
        check(
            document,
            "/v1/integrity/public-key",
            "GET",
            api.simulate_get("/v1/integrity/public-key"),
        )

    def test_tail_and_export_answers(self, api: testing.TestClient, document: dict[str, Any]):
        tail = api.simulate_get("/v1/events/tail", params={"limit": 3})
        check(document, "/v1/events/tail", "GET", tail)
        check(
            document,
            "/v1/events/tail",
            "GET",
            api.simulate_get(
                "/v1/events/tail",
                params={"limit": 3},
                headers={"If-None-Match": tail.headers["etag"]},
            ),
        )
        check(document, "/v1/events/tail", "GET", api.simulate_get("/v1/events/tail?limit=0"))
        for fmt in ("ndjson", "csv"):
            check(
                document,
                "/v1/events/export",
                "GET",
                api.simulate_get("/v1/events/export", params={"format": fmt, "type": "none"}),
            )
        check(
            document,
            "/v1/events/export",
            "GET",
            api.simulate_get("/v1/events/export", params={"format": "xml"}),
        )
