"""Ingest with AUDITLOG_ACK_FSYNC: events queued but not confirmed on disk come back as a 503
that carries their ids, so that the client can send them again with the same ids."""

from __future__ import annotations

from typing import Any

import falcon
import falcon.asgi
import orjson
import pytest
from falcon import testing

from auditlog.app import _handle_domain_error
from auditlog.errors import AuditlogError, NotDurable
from auditlog.services.envelope import Limits
from auditlog.services.ingest import EnvelopeFormat, IngestService
from tests import factories


class UnconfirmedStream:
    """Takes the entries, but cannot confirm them on disk."""

    def __init__(self) -> None:
        self.queued: list[bytes] = []

    async def append(
        self, payloads: list[bytes], request_id: str | None = None, bucket: object = None
    ) -> list[str]:
        self.queued += payloads
        raise NotDurable("not confirmed within 1000 ms")


class TestNotConfirmed:
    async def test_the_ids_of_the_queued_events_are_given_back(self):
        stream = UnconfirmedStream()
        ingest = IngestService(stream, Limits(), max_events=10)  # type: ignore[arg-type]
        sent = factories.events(2)
        del sent[1]["id"]  # the server assigns this one: the client needs to be told it
        with pytest.raises(NotDurable) as raised:
            await ingest.submit(orjson.dumps(sent), EnvelopeFormat.NATIVE)
        queued = [orjson.loads(p)["id"] for p in stream.queued]
        assert raised.value.ids == queued
        assert queued[0] == sent[0]["id"]

    def test_answered_503_with_the_ids_and_retry_after(self):
        class Refusing:
            async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
                raise NotDurable("not confirmed", ids=["a", "b"])

        app = falcon.asgi.App()
        app.add_route("/", Refusing())
        app.add_error_handler(AuditlogError, _handle_domain_error)  # type: ignore[arg-type]
        result: Any = testing.TestClient(app).simulate_post("/")
        assert result.status_code == 503
        assert result.json["ids"] == ["a", "b"]
        assert result.headers["Retry-After"] == "1"
