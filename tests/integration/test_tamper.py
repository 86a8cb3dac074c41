"""`auditlog verify` finds every kind of tampering, names the seq, and exits non-zero.

A database of its own: filled by several writers at once, then changed behind the
service's back by a superuser, the way an insider with the disk or the `postgres` role could.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from falcon.util import async_to_sync
from sqlalchemy import Connection, Engine, create_engine, text

from auditlog.app import create_app
from auditlog.canonical import stored_event
from auditlog.cli import drop_database, migrate, setup_database
from auditlog.integrity.heads import TreeHead
from auditlog.integrity.leaf import leaf_hash
from auditlog.runtime import ApiRuntime
from auditlog.settings import Settings
from tests import factories
from tests.helpers import WorkerProcess, clear_redis, settings_env
from tests.integration.conftest import (
    authorized,
    concurrently,
    create_key,
    make_settings,
    post_call,
    wait_stored,
)

pytestmark = pytest.mark.slow
EVENTS = 3000


@pytest.fixture(scope="module")
def log(logs_dir: Path) -> Iterator[Settings]:
    """A log written by three writer slots in two worker processes at once."""
    settings = make_settings(writer_slots=3, writer_batch_max=200)
    setup_database(settings)
    migrate(settings)
    runtime = ApiRuntime.build(settings)
    client = authorized(
        create_app(settings, runtime=runtime), create_key(settings, "tamper-admin", "admin")
    )
    workers = [
        WorkerProcess(settings, logs_dir, name=f"tamper{i}", concurrency=2).start()
        for i in range(2)
    ]
    ids: list[str] = []

    for _ in range(EVENTS // 3 // 50):
        # Three requests at a time: batches from concurrent requests interleave in the tree.
        for result in concurrently(client, *(post_call(factories.events(50)) for _ in range(3))):
            assert result.status_code == 202
            ids.extend(result.json["ids"])
    owner = create_engine(settings.url_for("owner"))
    wait_stored(owner, ids, timeout=120)
    for process in workers:
        process.stop()
    owner.dispose()
    async_to_sync(runtime.close)
    yield settings
    drop_database(settings)
    clear_redis(settings)


@pytest.fixture(scope="module")
def superuser(log: Settings) -> Iterator[Engine]:
    engine = create_engine(log.admin_url.set(database=log.database_name))
    yield engine
    engine.dispose()


def verify(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "auditlog.cli", "verify", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def export(settings: Settings, path: Path, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "auditlog.cli", "export", "--out", str(path), *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )


def tamper(engine: Engine, *statements: str, params: dict[str, Any] | None = None) -> None:
    """Change the tables as a superuser would: triggers off for the session."""
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        for statement in statements:
            conn.execute(text(statement), params or {})


def row(conn: Connection, seq: int) -> dict[str, Any]:
    found = conn.execute(text("SELECT * FROM events WHERE seq = :s"), {"s": seq}).mappings()
    return dict(found.one())


class TestWritersAtOnce:
    def test_seq_is_gapless_and_the_log_verifies(self, log: Settings, superuser: Engine):
        with superuser.connect() as conn:
            count, low, high, distinct = conn.execute(
                text("SELECT count(*), min(seq), max(seq), count(DISTINCT seq) FROM events")
            ).one()
            heads = conn.scalar(text("SELECT count(*) FROM tree_heads"))
        assert (count, low, high, distinct) == (EVENTS, 0, EVENTS - 1, EVENTS)
        assert heads > 3  # many batches, from several writers
        result = verify(log)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.startswith(f"intact: {EVENTS} events")


class TestTampering:
    def test_changed_field(self, log: Settings, superuser: Engine):
        with superuser.connect() as conn:
            original = conn.scalar(text("SELECT data::text FROM events WHERE seq = 1234"))
        tamper(
            superuser, "UPDATE events SET data = jsonb_set(data, '{amount}', '1') WHERE seq = 1234"
        )
        try:
            result = verify(log)
            assert result.returncode == 1
            assert "first disagreement is at seq 1234" in result.stdout
        finally:
            tamper(
                superuser,
                "UPDATE events SET data = CAST(:d AS jsonb) WHERE seq = 1234",
                params={"d": original},
            )

    def test_removed_event(self, log: Settings, superuser: Engine):
        with superuser.connect() as conn:
            saved = row(conn, 777)
        tamper(superuser, "DELETE FROM events WHERE seq = 777")
        try:
            result = verify(log)
            assert result.returncode == 1
            assert "first disagreement is at seq 777" in result.stdout
            assert "missing" in result.stdout
        finally:
            self._restore(superuser, saved)

    def test_removed_last_event(self, log: Settings, superuser: Engine):
        with superuser.connect() as conn:
            saved = row(conn, EVENTS - 1)
        tamper(superuser, f"DELETE FROM events WHERE seq = {EVENTS - 1}")
        try:
            result = verify(log)
            assert result.returncode == 1
            assert f"first disagreement is at seq {EVENTS - 1}" in result.stdout
        finally:
            self._restore(superuser, saved)

    def test_forged_event_appended(self, log: Settings, superuser: Engine):
        tamper(
            superuser,
            f"INSERT INTO events SELECT occurred_at, gen_random_uuid(), {EVENTS},"
            " received_at, type, service, publisher, action, outcome, actor, subject,"
            " context, data, leaf_hash FROM events WHERE seq = 10",
        )
        try:
            result = verify(log)
            assert result.returncode == 1
            assert f"first disagreement is at seq {EVENTS}" in result.stdout
            assert "not covered by any signed tree head" in result.stdout
        finally:
            tamper(superuser, f"DELETE FROM events WHERE seq = {EVENTS}")

    def test_forged_event_with_a_taken_seq(self, log: Settings, superuser: Engine):
        tamper(
            superuser,
            "INSERT INTO events SELECT occurred_at, gen_random_uuid(), 500,"
            " received_at, type, service, publisher, action, outcome, actor, subject,"
            " context, data, leaf_hash FROM events WHERE seq = 10",
        )
        try:
            result = verify(log)
            assert result.returncode == 1
            assert "first disagreement is at seq 500" in result.stdout
        finally:
            tamper(
                superuser,
                "DELETE FROM events WHERE seq = 500 AND id NOT IN (SELECT id FROM event_ids)",
            )

    def test_swapped_seq(self, log: Settings, superuser: Engine):
        swap = (
            "UPDATE events SET seq = CASE seq WHEN 2000 THEN 2003 ELSE 2000 END"
            " WHERE seq IN (2000, 2003)"
        )
        tamper(superuser, swap)
        try:
            result = verify(log)
            assert result.returncode == 1
            assert "first disagreement is at seq 2000" in result.stdout
        finally:
            tamper(superuser, swap)

    def test_rewritten_leaf_hash_is_caught_by_the_signed_head(
        self, log: Settings, superuser: Engine
    ):
        """Changing an event and storing its correctly recomputed leaf hash still fails the
        signed head of its batch: the change is placed within that batch's seqs."""
        with superuser.connect() as conn:
            saved = row(conn, 42)
        outcome = "failure" if saved["outcome"] != "failure" else "success"
        forged = {**stored_event(SimpleNamespace(**saved)), "outcome": outcome}
        del forged["leaf_hash"]
        tamper(
            superuser,
            "UPDATE events SET outcome = :o, leaf_hash = :h WHERE seq = 42",
            params={"o": forged["outcome"], "h": leaf_hash(forged)},
        )
        try:
            result = verify(log)
            assert result.returncode == 1
            assert "[changed]" not in result.stdout  # the stored hash agrees with the event
            assert "[head-mismatch]" in result.stdout
            low, high = map(int, re.search(r"lies in seq (\d+)–(\d+)", result.stdout).groups())  # type: ignore[union-attr]
            assert low <= 42 <= high
            assert f"first disagreement is at seq {low}" in result.stdout
        finally:
            tamper(
                superuser,
                "UPDATE events SET outcome = :o, leaf_hash = :h WHERE seq = 42",
                params={"o": saved["outcome"], "h": saved["leaf_hash"]},
            )

    def test_end_removed_with_its_heads_needs_a_trusted_head(
        self, log: Settings, superuser: Engine, tmp_path: Path
    ):
        """Cut the newest batches and the heads that cover them: the log left is consistent
        with itself; a head the auditor kept from before shows the cut."""
        with superuser.connect() as conn:
            latest = conn.execute(
                text(
                    "SELECT tree_size, root_hash, timestamp, signature FROM tree_heads"
                    " ORDER BY tree_size DESC LIMIT 1"
                )
            ).one()
            cut = conn.scalar(
                text("SELECT max(tree_size) FROM tree_heads WHERE tree_size <= :n"),
                {"n": EVENTS - 500},
            )
            events = [row(conn, seq) for seq in range(cut, EVENTS)]
            heads = (
                conn.execute(text("SELECT * FROM tree_heads WHERE tree_size > :c"), {"c": cut})
                .mappings()
                .all()
            )
        trusted = tmp_path / "head.json"
        trusted.write_bytes(orjson.dumps(TreeHead(*latest).as_dict()))
        tamper(
            superuser,
            "DELETE FROM events WHERE seq >= :c",
            "DELETE FROM tree_heads WHERE tree_size > :c",
            params={"c": cut},
        )
        try:
            assert verify(log).returncode == 0  # what a cut at a head boundary looks like
            result = verify(log, "--trusted-head", str(trusted))
            assert result.returncode == 1, result.stdout
            assert f"first disagreement is at seq {cut}" in result.stdout
            assert "removed from its end" in result.stdout
        finally:
            for saved in events:
                self._restore(superuser, saved)
            for head in heads:
                columns = ", ".join(head)
                values = ", ".join(f":{c}" for c in head)
                tamper(
                    superuser,
                    f"INSERT INTO tree_heads ({columns}) VALUES ({values})",
                    params=dict(head),
                )
        assert verify(log, "--trusted-head", str(trusted)).returncode == 0

    def test_proofs_are_refused_from_a_damaged_tree(self, log: Settings, superuser: Engine):
        """No proof is handed out that the tables cannot back: a 500 that says so."""
        runtime = ApiRuntime.build(log)
        client = authorized(
            create_app(log, runtime=runtime), create_key(log, "tamper-auditor", "read")
        )
        with superuser.connect() as conn:
            target = str(conn.scalar(text("SELECT id FROM events WHERE seq = 300")))
            saved = row(conn, 301)  # the sibling of seq 300 in every inclusion path
        try:
            assert client.simulate_get(f"/v1/events/{target}/proof").status_code == 200
            tamper(superuser, "UPDATE events SET leaf_hash = sha256('x') WHERE seq = 301")
            answer = client.simulate_get(f"/v1/events/{target}/proof")
            assert answer.status_code == 500, answer.text
            assert answer.json["title"] == "Log damaged"
            assert "does not verify" in answer.json["description"]
            tamper(superuser, "DELETE FROM events WHERE seq = 301")
            answer = client.simulate_get(f"/v1/events/{target}/proof")
            assert answer.status_code == 500, answer.text
            assert "auditlog verify" in answer.json["description"]
        finally:
            tamper(superuser, "DELETE FROM events WHERE seq = 301")
            self._restore(superuser, saved)
        try:
            assert client.simulate_get(f"/v1/events/{target}/proof").status_code == 200
        finally:
            async_to_sync(runtime.close)

    def test_untouched_again_after_the_repairs(self, log: Settings):
        result = verify(log)
        assert result.returncode == 0, result.stdout

    @staticmethod
    def _restore(engine: Engine, saved: dict[str, Any]) -> None:
        columns = ", ".join(saved)
        values = ", ".join(f":{c}" for c in saved)
        for name in ("data", "actor", "subject", "context"):
            saved[name] = None if saved[name] is None else orjson.dumps(saved[name]).decode()
        tamper(engine, f"INSERT INTO events ({columns}) VALUES ({values})", params=saved)


class TestExport:
    def test_whole_export_verifies_offline(self, log: Settings, tmp_path: Path):
        path = tmp_path / "log.ndjson"
        export(log, path)
        lines = path.read_bytes().splitlines()
        assert orjson.loads(lines[0])["start"] == 0
        result = verify(log, "--file", str(path))
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"{EVENTS} events" in result.stdout

    def test_edited_export_is_caught(self, log: Settings, tmp_path: Path):
        path = tmp_path / "log.ndjson"
        export(log, path)
        lines = path.read_bytes().splitlines()
        for i, line in enumerate(lines):
            value = orjson.loads(line)
            if value.get("seq") == 321:
                value["actor"]["id"] = "someone-else"
                lines[i] = orjson.dumps(value)
        path.write_bytes(b"\n".join(lines) + b"\n")
        result = verify(log, "--file", str(path))
        assert result.returncode == 1
        assert "first disagreement is at seq 321" in result.stdout

    def test_export_of_a_time_range_verifies_on_its_own(
        self, log: Settings, tmp_path: Path, superuser: Engine
    ):
        with superuser.connect() as conn:
            since, until = conn.execute(
                text(
                    "SELECT percentile_disc(0.6) WITHIN GROUP (ORDER BY occurred_at),"
                    " percentile_disc(0.8) WITHIN GROUP (ORDER BY occurred_at) FROM events"
                )
            ).one()
        path = tmp_path / "piece.ndjson"
        export(log, path, "--since", since.isoformat(), "--until", until.isoformat())
        header = orjson.loads(path.read_bytes().splitlines()[0])
        assert header["start"] > 0
        assert header["prefix"]
        result = verify(log, "--file", str(path))
        assert result.returncode == 0, result.stdout + result.stderr

    def test_another_key_does_not_verify(self, log: Settings, tmp_path: Path):
        other = tmp_path / "other.pem"
        subprocess.run(
            [sys.executable, "-m", "auditlog.cli", "keygen", "--out", str(other)],
            env=settings_env(log),
            check=True,
            capture_output=True,
        )
        result = verify(log, "--public-key", f"{other}.pub")
        assert result.returncode == 1
        assert "no valid signature" in result.stdout


def test_verify_memory_does_not_grow_with_the_log(log: Settings, tmp_path: Path):
    """Peak RSS of `auditlog verify --file` on the whole log vs. on a tenth of it."""
    whole = tmp_path / "whole.ndjson"
    export(log, whole)
    lines = whole.read_bytes().splitlines()
    tenth = tmp_path / "tenth.ndjson"
    # A prefix of the log is an export too (start 0, no prefix hashes needed).
    cut = next(
        i
        for i, line in enumerate(lines)
        if b'"tree_size"' in line and orjson.loads(line)["tree_size"] >= EVENTS // 10
    )
    tenth.write_bytes(b"\n".join(lines[: cut + 1]) + b"\n")

    def peak_rss_kb(path: Path) -> int:
        # The peak of this one child (wait4), not of every child the tests have waited for.
        proc = subprocess.Popen(
            [sys.executable, "-m", "auditlog.cli", "verify", "--file", str(path)],
            env=settings_env(log),
            stdout=subprocess.DEVNULL,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        assert proc.returncode == 0
        return usage.ru_maxrss

    small = peak_rss_kb(tenth)
    large = peak_rss_kb(whole)
    assert large - small < 8 * 1024, (small, large)  # 10x the events, < 8 MB more
