"""Build the long-lived collaborators of a process (engines, Redis clients, services) once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import redis

from auditlog.services.envelope import Limits
from auditlog.services.export import ExportService
from auditlog.services.ingest import IngestService
from auditlog.services.queries import QueryService
from auditlog.services.tail import TailService, TailUpdater
from auditlog.services.writer import BatchWriter
from auditlog.settings import Settings
from auditlog.storage.engine import create_role_engine
from auditlog.storage.events import EventStore
from auditlog.storage.leases import SlotLeases
from auditlog.storage.stream import EventStream
from auditlog.storage.tail import TailCache


def redis_client(settings: Settings, *, blocking_ms: int = 0) -> redis.Redis:
    """A Redis client whose waits are bounded (beyond any blocking read it will make)."""
    timeout = settings.redis_timeout_s + blocking_ms / 1000
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=timeout,
        socket_connect_timeout=settings.redis_timeout_s,
        health_check_interval=30,
    )


def event_stream(settings: Settings, client: redis.Redis) -> EventStream:
    return EventStream(client, settings.key("events"), backlog_limit=settings.backlog_limit)


def tail_cache(settings: Settings, client: redis.Redis) -> TailCache:
    return TailCache(client, settings.key("tail"), size=settings.tail_size)


def limits(settings: Settings) -> Limits:
    return Limits(
        max_data_bytes=settings.max_data_bytes,
        max_string_chars=settings.max_string_chars,
        max_depth=settings.max_depth,
        future_skew=timedelta(seconds=settings.future_skew_s),
    )


@dataclass
class ApiRuntime:
    """What an API process needs: the ingest and query services and their backends."""

    ingest: IngestService
    queries: QueryService
    store: EventStore
    stream: EventStream
    tail: TailService
    exports: ExportService

    @classmethod
    def build(cls, settings: Settings) -> ApiRuntime:
        client = redis_client(settings)
        stream = event_stream(settings, client)
        store = EventStore(create_role_engine(settings, "reader"))
        ingest = IngestService(stream, limits(settings), max_events=settings.max_events_per_request)
        # The tail has a client of its own: it gives up on Redis fast and reads the database.
        cache = tail_cache(
            settings, TailCache.client_for(settings.redis_url, settings.tail_timeout_s)
        )
        tail = TailService(
            cache,
            store,
            follow_max_s=settings.follow_max_s,
            follow_max_per_process=settings.follow_max_per_process,
            follow_poll_s=settings.follow_poll_s,
        )
        exports = ExportService(store, max_per_process=settings.export_max_per_process)
        return cls(
            ingest=ingest,
            queries=QueryService(store),
            store=store,
            stream=stream,
            tail=tail,
            exports=exports,
        )

    def close(self) -> None:
        """Give back every connection (tests and shutdown hooks)."""
        self.store.close()
        self.stream.close()
        self.tail.close()


@dataclass
class WriterRuntime:
    """What a worker process needs to drain the stream."""

    settings: Settings
    writer: BatchWriter
    leases: SlotLeases
    stream: EventStream

    @classmethod
    def build(cls, settings: Settings) -> WriterRuntime:
        client = redis_client(settings, blocking_ms=settings.writer_block_ms)
        stream = event_stream(settings, client)
        engine = create_role_engine(settings, "writer", pool_size=1)
        writer = BatchWriter(
            stream,
            EventStore(engine, engine),
            batch_max=settings.writer_batch_max,
            block_ms=settings.writer_block_ms,
            claim_idle_ms=int(settings.writer_claim_idle_s * 1000),
            max_attempts=settings.writer_max_attempts,
            # After each COMMIT: the batch joins the tail cache (never before it is stored).
            on_commit=[TailUpdater(tail_cache(settings, client)).record_batch],
        )
        return cls(
            settings=settings, writer=writer, leases=cls.leases_for(settings, client), stream=stream
        )

    @staticmethod
    def leases_for(settings: Settings, client: redis.Redis) -> SlotLeases:
        return SlotLeases(client, settings.key("writer", "slot"), settings.writer_lease_s)
