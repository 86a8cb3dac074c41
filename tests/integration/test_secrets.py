"""Secrets never leave the request that carries them: no token in the app's log, in the
audit records the log keeps of reads, in the worker's log, in `auditlog keys list` or
GET /v1/keys, and no token hash anywhere but the key table."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import time
import uuid
from typing import Any

from falcon import testing
from sqlalchemy import Engine, text

from auditlog.settings import Settings
from auditlog.storage.keys import KeyStore
from tests import factories
from tests.helpers import WorkerProcess, settings_env, wait_for
from tests.integration.conftest import LogCapture, Tokens, authorized, create_key, post


def forms(token: str) -> list[str]:
    """The ways a token could leak: itself, its secret part, its stored hash."""
    digest = hashlib.sha256(token.encode()).digest()
    return [
        token,
        token.removeprefix("alk_"),
        digest.hex(),
        base64.b64encode(digest).decode(),
        base64.urlsafe_b64encode(digest).decode().rstrip("="),
    ]


def leaks(haystack: str, *tokens: str) -> list[str]:
    return [form for token in tokens for form in forms(token) if form in haystack]


def exercise(app: Any, token: str, request_id: str) -> None:
    """Requests of every outcome with this token: answered, refused, failed validation."""
    client = authorized(app, token)
    headers = {"X-Request-ID": request_id}
    client.simulate_get("/v1/events", params={"limit": 1}, headers=headers)
    client.simulate_get("/v1/events", params={"since": "nonsense"}, headers=headers)
    client.simulate_get("/v1/keys", headers=headers)
    client.simulate_get("/v1/nowhere", headers=headers)
    post(client, factories.event(), headers=headers)
    post(client, b"{", headers=headers)
    post(client, factories.event(type="Not A Type"), headers=headers)
    client.simulate_delete("/v1/events/x", headers=headers)


class TestTokensAreNotLogged:
    def test_not_in_the_app_log_nor_the_audit_records_nor_the_worker_log(  # noqa: PLR0917 - fixtures
        self,
        app: Any,
        tokens: Tokens,
        settings: Settings,
        server_log: LogCapture,
        owner_db: Engine,
        worker: WorkerProcess,
    ):
        doomed = f"doomed-{uuid.uuid4().hex[:8]}"
        revoked = create_key(settings, doomed, "read")
        assert KeyStore(owner_db).revoke(doomed)
        time.sleep(settings.key_cache_s * 1.5)  # every process has reloaded its keys
        unknown = "alk_" + uuid.uuid4().hex + uuid.uuid4().hex
        everyone = (tokens.admin, tokens.reader, tokens.billing_writer, revoked, unknown)
        marker = f"secrets-{uuid.uuid4().hex}"
        for token in everyone:
            exercise(app, token, marker)
        # The same with the token in other places a careless log could pick up.
        anonymous = testing.TestClient(app)
        anonymous.simulate_get(
            "/v1/events",
            params={"token": tokens.admin},
            headers={"Authorization": f"Basic {tokens.reader}", "X-Request-ID": marker},
        )
        anonymous.simulate_get("/v1/events", headers={"Authorization": tokens.admin})

        lines = "\n".join(server_log.lines)
        assert f'"request_id": "{marker}"' in lines
        assert '"key": "test-admin"' in lines  # who asked is logged: by key name
        assert not leaks(lines, *everyone)

        # The reads were recorded in the log itself (with their filters): no token there.
        def audited() -> int:
            with owner_db.connect() as conn:
                return int(
                    conn.scalar(
                        text(
                            "SELECT count(*) FROM events WHERE type = 'auditlog.query.executed'"
                            " AND context->>'request_id' = :r"
                        ),
                        {"r": marker},
                    )
                )

        # Three reads each by the admin and the reader key (an unmatched path reaches no
        # resource, so no key is asked for); refused keys are not principals.
        wait_for(lambda: audited() == 6, timeout=30, what="the audit records of the reads")
        with owner_db.connect() as conn:
            stored = "\n".join(
                conn.scalars(
                    text("SELECT e::text FROM events e WHERE context->>'request_id' = :r"),
                    {"r": marker},
                )
            )
        assert "/v1/keys" in stored
        assert not leaks(stored, tokens.reader, tokens.billing_writer, revoked, unknown)
        # A token sent as a query parameter is the client's mistake, kept as sent (it was
        # not a credential there); the admin token was only ever sent as one in a header.
        assert [form for form in leaks(stored, tokens.admin) if form != tokens.admin] == []
        assert not leaks(worker.log_path.read_text(errors="replace"), *everyone)

    def test_the_keys_listing_shows_no_secret(self, app: Any, tokens: Tokens, settings: Settings):
        everyone = (tokens.admin, tokens.reader, tokens.billing_writer)
        listing = authorized(app, tokens.admin).simulate_get("/v1/keys")
        assert listing.status_code == 200
        assert {"test-admin", "auditor", "billing-writer"} <= {
            k["name"] for k in listing.json["keys"]
        }
        assert not leaks(listing.text, *everyone)
        cli = subprocess.run(
            [sys.executable, "-m", "auditlog.cli", "keys", "list"],
            env=settings_env(settings),
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        assert "test-admin" in cli.stdout
        assert not leaks(cli.stdout + cli.stderr, *everyone)

    def test_only_the_hash_is_stored(self, tokens: Tokens, owner_db: Engine):
        with owner_db.connect() as conn:
            row = conn.execute(
                text("SELECT k::text AS everything, token_hash FROM api_keys k WHERE name = :n"),
                {"n": "test-admin"},
            ).one()
        assert bytes(row.token_hash) == hashlib.sha256(tokens.admin.encode()).digest()
        assert tokens.admin not in row.everything
        assert tokens.admin.removeprefix("alk_") not in row.everything


def test_a_revoked_key_leaves_no_trace_of_its_token(settings: Settings, app: Any):
    """Revocation keeps the row (for the record) but the token is never shown again."""
    name = f"gone-{time.monotonic_ns()}"
    token = create_key(settings, name, "read")
    assert authorized(app, token).simulate_get("/v1/events").status_code == 200
    revoke = subprocess.run(
        [sys.executable, "-m", "auditlog.cli", "keys", "revoke", name],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert not leaks(revoke.stdout + revoke.stderr, token)
