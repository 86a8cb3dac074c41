"""The database itself refuses to change history, whoever asks."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError

from auditlog.integrity.heads import HeadSigner
from auditlog.integrity.verify import LogVerifier, interleave
from auditlog.settings import Role, Settings
from auditlog.storage.admin import alembic_config, drop_database, migrate, setup_database
from auditlog.storage.engine import create_role_engine
from auditlog.storage.event_writer import EventWriter, StoreRejected, StoreUnavailable
from auditlog.storage.tree import TreeStore
from tests import factories
from tests.integration.conftest import (
    PUBLIC_KEY,
    SIGNING_KEY,
    make_settings,
    post,
    stored_counts,
    wait_stored,
)
from tests.topology import free_port

CHANGES = {
    "update": "UPDATE {table} SET {column} = {column}",
    "delete": "DELETE FROM {table}",
    "truncate": "TRUNCATE {table}",
}
COLUMNS = {
    "events": "type",
    "event_ids": "occurred_at",
    "merkle_nodes": "hash",
    "tree_heads": "root_hash",
    "event_counts": "n",
    "checkpoints": "note",
    "checkpoint_cosignatures": "signature",
    "witness_refusals": "answer",
}
# A row for the row triggers to refuse, where the table may still be empty (rolled back).
ROWS = {
    "merkle_nodes": "INSERT INTO merkle_nodes VALUES (8, 1e12, sha256('x'))",
    "checkpoints": "INSERT INTO checkpoints (tree_size, note) VALUES (1e15, 'x')",
    "checkpoint_cosignatures": "INSERT INTO checkpoint_cosignatures (tree_size, witness,"
    " signature) VALUES (1e15, 'w', 'x')",
    "witness_refusals": "INSERT INTO witness_refusals (tree_size, witness, status, answer)"
    " VALUES (1e15, 'w', 422, 'x')",
}


@pytest.fixture(scope="module")
def stored(api: object, owner_db: Engine) -> str:
    """At least one stored event, so that every statement has a row (and a chunk) to hit."""
    sent = factories.event()
    post(api, sent)  # type: ignore[arg-type]
    wait_stored(owner_db, [sent["id"]])
    return str(sent["id"])


@pytest.fixture(scope="module")
def engines(settings: Settings) -> Iterator[dict[Role, Engine]]:
    engines: dict[Role, Engine] = {
        role: create_engine(settings.url_for(role)) for role in ("owner", "writer", "reader")
    }
    yield engines
    for engine in engines.values():
        engine.dispose()


def attempt(engine: Engine, sql: str) -> str:
    """Run sql; return the database's refusal message (the test fails if it is accepted)."""
    with engine.connect() as conn:
        try:
            conn.execute(text(sql))
        except DBAPIError as exc:
            conn.rollback()
            return str(exc.orig)
        conn.rollback()
    raise AssertionError(f"accepted: {sql}")


def first_chunk(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(
            conn.scalar(
                text(
                    "SELECT format('%I.%I', chunk_schema, chunk_name)"
                    " FROM timescaledb_information.chunks"
                    " WHERE hypertable_name = 'events' ORDER BY range_start LIMIT 1"
                )
            )
        )


class TestRoles:
    """The writer may only INSERT and SELECT; the reader may only SELECT."""

    @pytest.mark.parametrize("change", list(CHANGES))
    @pytest.mark.parametrize("table", list(COLUMNS))
    @pytest.mark.parametrize("role", ["writer", "reader"])
    def test_change_is_denied(
        self, engines: dict[Role, Engine], stored: str, role: Role, table: str, change: str
    ):
        sql = CHANGES[change].format(table=table, column=COLUMNS[table])
        assert "permission denied" in attempt(engines[role], sql)

    def test_reader_cannot_insert(self, engines: dict[Role, Engine]):
        message = attempt(
            engines["reader"], "INSERT INTO event_ids VALUES (gen_random_uuid(), 'x', now())"
        )
        assert "permission denied" in message

    def test_writer_can_insert_and_select(self, engines: dict[Role, Engine]):
        with engines["writer"].begin() as conn:
            conn.execute(text("SELECT count(*) FROM events"))
            conn.execute(text("INSERT INTO event_ids VALUES (gen_random_uuid(), 'billing', now())"))
            conn.rollback()


class TestAppendOnly:
    """Even the owner is refused, by the trigger on the hypertable and by its own grants."""

    @pytest.mark.parametrize("change", list(CHANGES))
    @pytest.mark.parametrize("table", list(COLUMNS))
    def test_owner_is_refused(
        self, engines: dict[Role, Engine], stored: str, table: str, change: str
    ):
        sql = CHANGES[change].format(table=table, column=COLUMNS[table])
        message = attempt(engines["owner"], sql)
        assert "append-only" in message or "permission denied" in message

    @pytest.mark.parametrize("change", list(CHANGES))
    @pytest.mark.parametrize("table", list(COLUMNS))
    def test_trigger_refuses_the_owner_even_with_privileges(
        self, engines: dict[Role, Engine], stored: str, table: str, change: str
    ):
        sql = CHANGES[change].format(table=table, column=COLUMNS[table])
        with engines["owner"].connect() as conn:
            conn.execute(text(f"GRANT UPDATE, DELETE, TRUNCATE ON {table} TO CURRENT_USER"))
            if table in ROWS:
                conn.execute(text(ROWS[table]))
            with pytest.raises(DBAPIError, match="append-only"):
                conn.execute(text(sql))
            conn.rollback()

    @pytest.mark.parametrize("change", list(CHANGES))
    def test_chunks_refuse_the_owner_too(
        self, engines: dict[Role, Engine], stored: str, change: str
    ):
        chunk = first_chunk(engines["owner"])
        message = attempt(engines["owner"], CHANGES[change].format(table=chunk, column="type"))
        assert "append-only" in message or "permission denied" in message


class TestMigrations:
    """Alembic owns the schema: the models match it, and it goes down and up cleanly."""

    def test_models_match_the_migrated_schema(self, settings: Settings):
        command.check(alembic_config(settings))

    def test_downgrade_and_upgrade_again(self):
        scratch = make_settings()
        setup_database(scratch)
        try:
            migrate(scratch)
            command.downgrade(alembic_config(scratch), "base")
            migrate(scratch)
            command.check(alembic_config(scratch))
        finally:
            drop_database(scratch)


class TestIntegrityBackfill:
    """Events stored before the integrity revision are hashed into the tree by it."""

    def test_upgrade_hashes_existing_events_and_the_next_batch_signs_them(self):
        scratch = make_settings()
        setup_database(scratch)
        owner = create_engine(scratch.url_for("owner"))
        writer = create_engine(scratch.url_for("writer"))
        try:
            command.upgrade(alembic_config(scratch), "0001")
            old = [factories.event() for _ in range(5)]
            with owner.begin() as conn:
                for seq, event in enumerate(old):
                    conn.execute(
                        text(
                            "INSERT INTO events (occurred_at, id, seq, received_at, type, service,"
                            " outcome, data) VALUES (:t, :id, :seq, :t, :type, :service,"
                            " :outcome, '{}')"
                        ),
                        {**event, "t": event["occurred_at"], "seq": seq},
                    )
                    conn.execute(
                        text("INSERT INTO event_ids VALUES (:id, :t)"),
                        {"id": event["id"], "t": event["occurred_at"]},
                    )
            migrate(scratch)
            command.check(alembic_config(scratch))

            store = EventWriter(writer, HeadSigner.from_file(SIGNING_KEY))
            new = factories.event(drop=("id",))
            new.update(id=str(uuid.uuid4()), received_at=new["occurred_at"], publisher=None)
            result = store.write([new])
            assert result.head is not None
            assert result.head.tree_size == 6
            with TreeStore(writer).snapshot() as snap:
                report = LogVerifier(PUBLIC_KEY).run(interleave(snap.events(), snap.heads()))
            assert report.intact, report.findings
            assert (report.events, report.tree_size) == (6, 6)
        finally:
            owner.dispose()
            writer.dispose()
            drop_database(scratch)


class TestTreeEdge:
    """The writer continues the tree only from a right edge that matches the signed root."""

    def test_an_edited_edge_stops_the_writer(self):
        scratch = make_settings()
        setup_database(scratch)
        migrate(scratch)
        writer = create_engine(scratch.url_for("writer"))
        superuser = create_engine(scratch.admin_url.set(database=scratch.database_name))
        store = EventWriter(writer, HeadSigner.from_file(SIGNING_KEY))
        try:
            store.write([queued() for _ in range(3)])
            with superuser.begin() as conn:
                edge = conn.scalar(text("SELECT frontier FROM tree_heads WHERE tree_size = 3"))
                conn.execute(text("SET LOCAL session_replication_role = replica"))
                conn.execute(
                    text(
                        "UPDATE tree_heads SET frontier = sha256(frontier) || substr(frontier, 33)"
                    )
                )
            event = queued()
            with pytest.raises(StoreUnavailable, match="does not match its signed root"):
                store.write([event])
            with superuser.begin() as conn:
                conn.execute(text("SET LOCAL session_replication_role = replica"))
                conn.execute(text("UPDATE tree_heads SET frontier = :e"), {"e": edge})
            assert store.write([event]).head.tree_size == 4  # type: ignore[union-attr]
        finally:
            writer.dispose()
            superuser.dispose()
            drop_database(scratch)


def queued(**overrides: Any) -> dict[str, Any]:
    """An event in the stored form the API queues, with what a test changes in it."""
    event = factories.event()
    event.update(received_at=event["occurred_at"], publisher=None)
    event.update(overrides)
    return event


class TestCopyEncoding:
    """What the writer stores is what it was given, whatever the edge let through."""

    def test_text_that_would_break_a_copy_row_is_stored_as_it_came(self):
        scratch = make_settings()  # a log of its own: these services are no one's
        setup_database(scratch)
        migrate(scratch)
        writer = create_role_engine(scratch, "writer", pool_size=1)
        owner = create_role_engine(scratch, "owner", pool_size=1)
        nasty = ["tab\there", "new\nline", "cr\rlf\r\n", "back\\slash", "\\N", "\\.", "\\"]
        events = [
            queued(type=value, service=value, publisher=value, action=value, data={"v": value})
            for value in nasty
        ]
        try:
            result = EventWriter(writer, HeadSigner.from_file(SIGNING_KEY)).write(events)
            assert len(result.stored) == len(events)
            with owner.connect() as conn:
                rows = conn.execute(
                    text("SELECT id::text, type, service, publisher, action, data FROM events")
                )
                stored = {row[0]: tuple(row[1:]) for row in rows}
            with TreeStore(writer).snapshot() as snap:
                report = LogVerifier(PUBLIC_KEY).run(interleave(snap.events(), snap.heads()))
            assert report.intact, report.findings
        finally:
            writer.dispose()
            owner.dispose()
            drop_database(scratch)
        assert len(stored) == len(events)
        for event, value in zip(events, nasty, strict=True):
            assert stored[event["id"]] == (value, value, value, value, {"v": value})


class TestWriteFailures:
    """A batch the database refuses for its content is StoreRejected (split, then
    dead-lettered); a database that does not answer is StoreUnavailable (retried)."""

    @pytest.fixture
    def store(self, settings: Settings) -> Iterator[EventWriter]:
        writer = create_role_engine(settings, "writer", pool_size=1)
        yield EventWriter(writer, HeadSigner.from_file(SIGNING_KEY))
        writer.dispose()

    @pytest.mark.parametrize(
        "change",
        [
            {"type": "nul\x00in.type"},  # 22021: PostgreSQL cannot store U+0000
            {"context": {"trace_id": secrets.token_hex(3000)}},  # 54000: btree's limit
            {"outcome": "perhaps"},  # 23514: the outcome check
            {"occurred_at": "294277-01-01T00:00:00Z"},  # does not even parse
        ],
        ids=["nul", "indexed-value-too-large", "check-constraint", "unparsable-time"],
    )
    def test_content_the_database_refuses(
        self, store: EventWriter, owner_db: Engine, change: dict[str, Any]
    ):
        event = queued(**change)
        with pytest.raises(StoreRejected):
            store.write([event])
        assert stored_counts(owner_db, [event["id"]]) == {}

    def test_database_that_does_not_answer(self, settings: Settings):
        gone = settings.model_copy(
            update={"database_url": f"postgresql://127.0.0.1:{free_port()}/nothing"}
        )
        engine = create_role_engine(gone, "writer", pool_size=1)
        try:
            store = EventWriter(engine, HeadSigner.from_file(SIGNING_KEY))
            with pytest.raises(StoreUnavailable):
                store.write([queued()])
        finally:
            engine.dispose()


class TestIdsPerService:
    """The ledger's key is (id, service): a batch dedupes within a service and reports an id
    that another service used before it, in an earlier batch or in the same one."""

    @pytest.fixture
    def store(self, settings: Settings) -> Iterator[EventWriter]:
        writer = create_role_engine(settings, "writer", pool_size=1)
        yield EventWriter(writer, HeadSigner.from_file(SIGNING_KEY))
        writer.dispose()

    def test_same_id_in_one_batch(self, store: EventWriter, owner_db: Engine):
        billing = queued()
        accounts = queued(id=billing["id"], service="accounts")
        web = queued(id=billing["id"], service="web")
        result = store.write([billing, accounts, dict(billing), web])
        assert [e["service"] for e in result.stored] == ["billing", "accounts", "web"]
        assert result.duplicates == 1
        first = result.stored[0]["seq"]
        assert [(r.service, r.seq, r.earlier_services) for r in result.reused] == [
            ("accounts", first + 1, ("billing",)),
            ("web", first + 2, ("billing", "accounts")),
        ]
        assert stored_counts(owner_db, [billing["id"]]) == {billing["id"]: 3}

    def test_same_id_in_a_later_batch(self, store: EventWriter):
        billing = queued()
        assert not store.write([billing]).reused
        again = store.write([dict(billing), queued(id=billing["id"], service="accounts")])
        assert again.duplicates == 1
        assert [(r.id, r.service, r.earlier_services) for r in again.reused] == [
            (billing["id"], "accounts", ("billing",))
        ]
