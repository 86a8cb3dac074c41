"""Every /v1 request needs a live key of the right scope; writers only speak for their own
services; reads are audited; keys are rate limited and revocable."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import pytest
from falcon import testing
from falcon.util import async_to_sync
from sqlalchemy import Engine, text

from auditlog.app import create_app
from auditlog.runtime import ApiRuntime
from auditlog.settings import Settings
from tests import factories
from tests.helpers import event_stream, settings_env, wait_for
from tests.integration.conftest import (
    Tokens,
    authorized,
    create_key,
    post,
    stored_counts,
    wait_stored,
)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class TestAuthentication:
    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("GET", "/v1/events"),
            ("POST", "/v1/events"),
            ("GET", "/v1/stats/buckets"),
            ("GET", "/v1/integrity/tree-head"),
            ("GET", "/v1/keys"),
            ("DELETE", "/v1/events/x"),
            # The rule is the matched resource's, whatever the path's spelling.
            ("GET", "//v1/events"),
            ("GET", "///v1/keys"),
            ("POST", "//v1/events"),
            ("GET", "/v1/events/"),
        ],
    )
    def test_no_token_is_401_with_a_challenge(
        self, anonymous: testing.TestClient, method: str, path: str
    ):
        result = anonymous.simulate_request(method, path)
        assert result.status_code == 401
        assert result.headers["www-authenticate"] == 'Bearer realm="auditlog"'
        assert result.json["title"] == "Unauthorized"

    @pytest.mark.parametrize("path", ["/v1/nowhere", "/v1//events", "/nowhere"])
    def test_an_unmatched_path_is_404_with_no_data(self, anonymous: testing.TestClient, path: str):
        result = anonymous.simulate_get(path)
        assert result.status_code == 404
        assert set(result.json) == {"title", "description"}

    @pytest.mark.parametrize(
        "header",
        [
            "Bearer alk_not-a-real-token",
            "Bearer ",
            "Basic dXNlcjpwYXNz",
            "alk_raw-token",
            "Bearer " + "x" * 5000,
        ],
    )
    def test_unknown_or_malformed_token_is_401(self, anonymous: testing.TestClient, header: str):
        result = anonymous.simulate_get("/v1/events", headers={"Authorization": header})
        assert result.status_code == 401
        assert "invalid_token" in result.headers["www-authenticate"]

    @pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json", "/metrics"])
    def test_operations_endpoints_stay_open(self, anonymous: testing.TestClient, path: str):
        assert anonymous.simulate_get(path).status_code == 200


class TestScopes:
    def test_read_key_cannot_post(self, app: Any, tokens: Tokens, owner_db: Engine):
        reader = authorized(app, tokens.reader)
        sent = factories.event()
        result = post(reader, sent)
        assert result.status_code == 403
        assert "scope read" in result.json["description"]
        assert stored_counts(owner_db, [sent["id"]]) == {}

    def test_write_key_cannot_read(self, app: Any, tokens: Tokens):
        writer = authorized(app, tokens.billing_writer)
        for path in ("/v1/events", "/v1/integrity/tree-head", "/v1/stats/buckets"):
            assert writer.simulate_get(path).status_code == 403, path

    def test_only_admin_lists_keys(self, app: Any, tokens: Tokens):
        assert authorized(app, tokens.reader).simulate_get("/v1/keys").status_code == 403
        keys = authorized(app, tokens.admin).simulate_get("/v1/keys").json["keys"]
        names = {k["name"]: k for k in keys}
        assert names["billing-writer"]["services"] == ["billing"]
        assert all("token" not in str(k) and "hash" not in str(k) for k in keys)

    def test_read_key_reads(self, app: Any, tokens: Tokens):
        assert authorized(app, tokens.reader).simulate_get("/v1/events").status_code == 200


class TestServiceBinding:
    def test_writer_for_billing_cannot_store_accounts(
        self, app: Any, tokens: Tokens, owner_db: Engine, worker: object
    ):
        writer = authorized(app, tokens.billing_writer)
        mine, theirs = factories.event(service="billing"), factories.event(service="accounts")
        result = post(writer, [mine, theirs])
        assert result.status_code == 403
        assert "accounts" in result.json["description"]
        assert "event(s) 1" in result.json["description"]
        marker = factories.event(service="billing")
        assert post(writer, marker).status_code == 202
        wait_stored(owner_db, [marker["id"]])
        assert stored_counts(owner_db, [mine["id"], theirs["id"]]) == {}  # nothing of it

    def test_missing_service_is_the_keys_own(
        self, app: Any, tokens: Tokens, owner_db: Engine, worker: object
    ):
        writer = authorized(app, tokens.billing_writer)
        sent = factories.event(drop=("service",))
        assert post(writer, sent).status_code == 202
        wait_stored(owner_db, [sent["id"]])
        stored = authorized(app, tokens.reader).simulate_get(f"/v1/events/{sent['id']}").json
        assert stored["service"] == "billing"

    def test_publisher_is_the_key_and_cannot_be_forged(
        self, app: Any, tokens: Tokens, owner_db: Engine, worker: object
    ):
        writer = authorized(app, tokens.billing_writer)
        forged = post(writer, factories.event(publisher="somebody-else"))
        assert forged.status_code == 422
        assert forged.json["errors"][0]["field"] == "publisher"
        sent = factories.event()
        post(writer, sent)
        wait_stored(owner_db, [sent["id"]])
        reader = authorized(app, tokens.reader)
        assert reader.simulate_get(f"/v1/events/{sent['id']}").json["publisher"] == "billing-writer"
        page = reader.simulate_get(
            "/v1/events", params={"publisher": "billing-writer", "limit": 1000}
        ).json
        assert sent["id"] in {e["id"] for e in page["events"]}
        assert {e["publisher"] for e in page["events"]} == {"billing-writer"}


class TestReadsAreAudited:
    def test_a_query_becomes_an_event(
        self, app: Any, tokens: Tokens, owner_db: Engine, worker: object
    ):
        reader = authorized(app, tokens.reader)
        marker = factories.event().get("id")
        result = reader.simulate_get(
            "/v1/events",
            params={"actor_id": marker, "limit": 7},
            headers={"X-Request-ID": f"audit-{marker}"},
        )
        assert result.status_code == 200

        def recorded() -> Any:
            with owner_db.connect() as conn:
                return conn.execute(
                    text(
                        "SELECT actor, data, context, publisher, outcome FROM events"
                        " WHERE type = 'auditlog.query.executed'"
                        " AND context->>'request_id' = :r"
                    ),
                    {"r": f"audit-{marker}"},
                ).first()

        row = wait_for(recorded, timeout=20, what="the audit record of the read")
        assert row.actor == {"type": "api_key", "id": "auditor"}
        assert row.data == {"filters": {"actor_id": marker, "limit": "7"}, "results": 0}
        assert row.context["path"] == "/v1/events"
        assert row.context["status"] == 200
        assert (row.publisher, row.outcome) == ("auditlog", "success")

    def test_a_refused_query_is_recorded_as_a_failure(
        self, app: Any, tokens: Tokens, owner_db: Engine, worker: object
    ):
        reader = authorized(app, tokens.reader)
        request_id = f"bad-{time.monotonic_ns()}"
        result = reader.simulate_get(
            "/v1/events", query_string="since=yesterday&x=%00", headers={"X-Request-ID": request_id}
        )
        assert result.status_code == 400

        def recorded() -> Any:
            with owner_db.connect() as conn:
                return conn.execute(
                    text(
                        "SELECT outcome, data FROM events WHERE type = 'auditlog.query.executed'"
                        " AND context->>'request_id' = :r"
                    ),
                    {"r": request_id},
                ).first()

        row = wait_for(recorded, timeout=20, what="the audit record of the refused read")
        assert row.outcome == "failure"
        assert row.data["filters"]["x"] == "\\u0000"

    def test_a_throttled_read_is_not_recorded(
        self, app: Any, settings: Settings, runtime: ApiRuntime, owner_db: Engine, worker: object
    ):
        token = create_key(
            settings, f"throttled-{time.monotonic_ns()}", "read", rate_per_s=0.1, burst=1
        )
        reader = authorized(app, token)
        ids = {status: f"{status}-{time.monotonic_ns()}" for status in (200, 429)}
        for status, request_id in ids.items():
            answer = reader.simulate_get("/v1/events", headers={"X-Request-ID": request_id})
            assert answer.status_code == status

        def recorded(request_id: str) -> bool:
            with owner_db.connect() as conn:
                return bool(
                    conn.scalar(
                        text(
                            "SELECT count(*) FROM events WHERE type = 'auditlog.query.executed'"
                            " AND context->>'request_id' = :r"
                        ),
                        {"r": request_id},
                    )
                )

        wait_for(lambda: recorded(ids[200]), timeout=20, what="the answered read recorded")
        wait_for(lambda: event_stream(settings).depth() == 0, timeout=20, what="the stream drained")
        assert not recorded(ids[429])

    def test_strict_audit_withholds_what_it_cannot_record(self, settings: Settings, tokens: Tokens):
        # Redis refuses connections: no audit record can be queued, so no answer is given,
        # and a streamed answer (an export) gives its slot back.
        own = settings.model_copy(
            update={"redis_url": "redis://127.0.0.1:1/0", "strict_read_audit": True}
        )
        runtime = ApiRuntime.build(own)
        try:
            reader = authorized(create_app(own, runtime=runtime), tokens.reader)
            for path in ("/v1/events", "/v1/events/export", "/v1/events/export"):
                answer = reader.simulate_get(
                    path, params={"format": "ndjson"} if "export" in path else None
                )
                assert answer.status_code == 503, (path, answer.text)
                assert "could not be recorded" in answer.json["description"]
                assert runtime.exports.running == 0
        finally:
            async_to_sync(runtime.close)

    def test_writes_are_not_reads(self, app: Any, tokens: Tokens, owner_db: Engine, worker: object):
        writer = authorized(app, tokens.billing_writer)
        request_id = f"write-{time.monotonic_ns()}"
        sent = factories.event()
        post(writer, sent, headers={"X-Request-ID": request_id})
        wait_stored(owner_db, [sent["id"]])
        with owner_db.connect() as conn:
            assert (
                conn.scalar(
                    text(
                        "SELECT count(*) FROM events WHERE type = 'auditlog.query.executed'"
                        " AND context->>'request_id' = :r"
                    ),
                    {"r": request_id},
                )
                == 0
            )


class TestRateLimits:
    def test_over_the_limit_is_429_with_retry_after(self, app: Any, settings: Settings):
        token = create_key(settings, f"slow-{time.monotonic_ns()}", "read", rate_per_s=0.5, burst=3)
        client = authorized(app, token)
        answers = [client.simulate_get("/v1/integrity/public-key") for _ in range(5)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
        assert int(answers[3].headers["retry-after"]) >= 1
        assert "0.5 requests/s" in answers[3].json["description"]

    def test_posts_spend_the_same_bucket(
        self, app: Any, settings: Settings, owner_db: Engine, worker: object
    ):
        token = create_key(
            settings,
            f"slow-writer-{time.monotonic_ns()}",
            "write",
            "billing",
            rate_per_s=0.5,
            burst=2,
        )
        client = authorized(app, token)
        sent = factories.events(3)
        answers = [post(client, event) for event in sent]
        assert [a.status_code for a in answers] == [202, 202, 429]
        assert int(answers[2].headers["retry-after"]) >= 1
        wait_stored(owner_db, [sent[0]["id"], sent[1]["id"]])
        assert stored_counts(owner_db, [sent[2]["id"]]) == {}  # refused: nothing queued
        assert client.simulate_get("/v1/events").status_code == 403  # scope, before bucket

    def test_keys_have_their_own_buckets(self, app: Any, settings: Settings, tokens: Tokens):
        token = create_key(settings, f"tiny-{time.monotonic_ns()}", "read", rate_per_s=0.1, burst=1)
        authorized(app, token).simulate_get("/v1/integrity/public-key")
        assert authorized(app, token).simulate_get("/v1/integrity/public-key").status_code == 429
        assert (
            authorized(app, tokens.reader).simulate_get("/v1/integrity/public-key").status_code
            == 200
        )


class TestKeyCommands:
    def cli(self, settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "auditlog.cli", "keys", *args],
            env=settings_env(settings),
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    def test_create_use_revoke(
        self, app: Any, settings: Settings, owner_db: Engine, worker: object
    ):
        name = f"ops-{time.monotonic_ns()}"
        created = self.cli(
            settings,
            "create",
            "--name",
            name,
            "--scope",
            "write",
            "--service",
            "billing",
            "--service",
            "payments",
        )
        assert created.returncode == 0, created.stderr
        token = created.stdout.strip().splitlines()[-1]
        assert token.startswith("alk_")
        assert len(token) > 40

        listing = self.cli(settings, "list")
        assert name in listing.stdout
        assert token not in listing.stdout
        with owner_db.connect() as conn:
            stored = conn.scalar(
                text("SELECT token_hash FROM api_keys WHERE name = :n"), {"n": name}
            )
        assert token.encode() not in bytes(stored)

        client = authorized(app, token)
        wait_for(
            lambda: post(client, factories.event(service="payments")).status_code == 202,
            timeout=2,
            what="the new key to be accepted",
        )
        assert self.cli(settings, "create", "--name", name, "--scope", "read").returncode == 2

        assert self.cli(settings, "revoke", name).returncode == 0
        wait_for(
            lambda: post(client, factories.event()).status_code == 401,
            timeout=settings.key_cache_s + 5,
            what="the revoked key to be refused",
        )
        assert self.cli(settings, "revoke", name).returncode == 2

        def recorded() -> Any:
            with owner_db.connect() as conn:
                return conn.execute(
                    text(
                        "SELECT array_agg(type ORDER BY seq) FROM events"
                        " WHERE subject->>'id' = :n AND service = 'auditlog'"
                    ),
                    {"n": name},
                ).scalar()

        changes = wait_for(
            lambda: (r := recorded()) and len(r) == 2 and r,
            timeout=20,
            what="the key changes recorded in the log",
        )
        assert changes == ["auditlog.key.created", "auditlog.key.revoked"]

    def test_limit_tightens_one_key(self, app: Any, settings: Settings):
        name = f"tightened-{time.monotonic_ns()}"
        created = self.cli(settings, "create", "--name", name, "--scope", "read")
        client = authorized(app, created.stdout.strip().splitlines()[-1])
        statuses = [client.simulate_get("/v1/integrity/public-key").status_code for _ in range(5)]
        assert statuses == [200] * 5  # the generous defaults
        limited = self.cli(settings, "limit", name, "--rate", "0.1", "--burst", "2")
        assert limited.returncode == 0, limited.stderr
        assert "0.1" in self.cli(settings, "list").stdout

        def throttled() -> bool:
            answers = [client.simulate_get("/v1/integrity/public-key") for _ in range(3)]
            return answers[-1].status_code == 429

        # Each API process sees the change at its next reload of the keys.
        wait_for(throttled, timeout=settings.key_cache_s + 5, what="the new limit applied")
        assert self.cli(settings, "limit", "no-such-key", "--rate", "1").returncode == 2

    @pytest.mark.parametrize(
        "args",
        [
            ["--name", "Bad Name", "--scope", "read"],
            ["--name", "w", "--scope", "write"],
            ["--name", "r", "--scope", "read", "--service", "billing"],
            ["--name", "w2", "--scope", "write", "--service", "Not A Service"],
        ],
    )
    def test_bad_key_definitions_are_refused(self, settings: Settings, args: list[str]):
        result = self.cli(settings, "create", *args)
        assert result.returncode == 2
        assert result.stderr.startswith("auditlog: ")
