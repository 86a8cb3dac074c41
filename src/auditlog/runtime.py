"""Build the long-lived collaborators of a process (engines, Redis clients, services) once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from auditlog.integrity.heads import HeadSigner, load_public_key
from auditlog.metrics import TimedEventWriter, record_batch
from auditlog.services.audit import SelfAudit
from auditlog.services.auth import Authenticator, KeyDirectory
from auditlog.services.envelope import Limits
from auditlog.services.export import ExportService
from auditlog.services.ingest import IngestService
from auditlog.services.integrity import IntegrityService
from auditlog.services.queries import QueryService
from auditlog.services.tail import TailService, TailUpdater
from auditlog.services.writer import BatchWriter
from auditlog.settings import Settings, SettingsError
from auditlog.storage.engine import create_async_role_engine, create_role_engine
from auditlog.storage.event_writer import EventWriter
from auditlog.storage.events import EventReader
from auditlog.storage.keys import KeyReader
from auditlog.storage.leases import SlotLeases
from auditlog.storage.ratelimit import RateLimiter
from auditlog.storage.stream import EventStream
from auditlog.storage.stream_append import StreamAppender
from auditlog.storage.tail import TailCache, TailReader
from auditlog.storage.tree import TreeReader


def redis_client(settings: Settings, *, blocking_ms: int = 0) -> redis.Redis:
    """A Redis client whose waits are bounded (beyond any blocking read it will make)."""
    timeout = settings.redis_timeout_s + blocking_ms / 1000
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=timeout,
        socket_connect_timeout=settings.redis_timeout_s,
        health_check_interval=30,
    )


def async_redis_client(
    settings: Settings, *, blocking_ms: int = 0, timeout_s: float | None = None, retry: bool = True
) -> aredis.Redis:
    """The asyncio client of an API process: bounded waits; `retry=False` for a client that
    gives up at once (the tail cache: the database is its retry)."""
    timeout = (timeout_s or settings.redis_timeout_s) + blocking_ms / 1000
    options: dict[str, Any] = {} if retry else {"retry": Retry(NoBackoff(), 0)}
    return aredis.Redis.from_url(
        settings.redis_url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout_s or settings.redis_timeout_s,
        health_check_interval=30,
        **options,
    )


def event_stream(settings: Settings, client: redis.Redis) -> EventStream:
    return EventStream(client, settings.key("events"))


def stream_appender(settings: Settings, client: aredis.Redis) -> StreamAppender:
    return StreamAppender(
        client,
        settings.key("events"),
        backlog_limit=settings.backlog_limit,
        bucket_prefix=settings.key("ratelimit"),
        fsync_timeout_ms=int(settings.ack_fsync_timeout_s * 1000) if settings.ack_fsync else None,
    )


def tail_cache(settings: Settings, client: redis.Redis) -> TailCache:
    return TailCache(client, settings.key("tail"), size=settings.tail_size)


def limits(settings: Settings) -> Limits:
    return Limits(
        max_data_bytes=settings.max_data_bytes,
        max_event_bytes=settings.max_event_bytes,
        max_string_chars=settings.max_string_chars,
        max_depth=settings.max_depth,
        future_skew=timedelta(seconds=settings.future_skew_s),
    )


def public_key(settings: Settings) -> bytes:
    """The log's public key; a missing or unreadable key stops the process at start-up."""
    path = settings.public_key_path or settings.signing_key_path
    try:
        return load_public_key(path)
    except (OSError, ValueError) as exc:
        raise SettingsError(
            f"AUDITLOG_PUBLIC_KEY_PATH / AUDITLOG_SIGNING_KEY_PATH: cannot read a key from "
            f"{path}: {exc}; create one with `auditlog keygen`"
        ) from None


def head_signer(settings: Settings) -> HeadSigner:
    """The writers' signing key; a missing or unreadable key stops the process at start-up."""
    try:
        return HeadSigner.from_file(settings.signing_key_path)
    except (OSError, ValueError) as exc:
        raise SettingsError(f"AUDITLOG_SIGNING_KEY_PATH: {exc}") from None


@dataclass
class ApiRuntime:
    """What an API process needs: its services and the backends they share.

    Built without any I/O (clients connect on first use, inside the event loop that serves
    the requests); `close` gives every connection back.
    """

    ingest: IngestService
    queries: QueryService
    integrity: IntegrityService
    authenticator: Authenticator
    audit: SelfAudit
    keys: KeyDirectory
    store: EventReader
    appender: StreamAppender
    tail: TailService
    exports: ExportService

    @classmethod
    def build(cls, settings: Settings) -> ApiRuntime:
        if not settings.cursor_key:
            raise SettingsError(
                "AUDITLOG_CURSOR_KEY: required by the API (the same secret on every instance; "
                "`make run` generates one into .env)"
            )
        # With AUDITLOG_ACK_FSYNC an append waits (WAITAOF) for up to its timeout.
        client = async_redis_client(
            settings, blocking_ms=int(settings.ack_fsync_timeout_s * 1000) * settings.ack_fsync
        )
        appender = stream_appender(settings, client)
        # Autocommit: a GET by id was five database round trips (pre-ping, BEGIN, the id
        # ledger, the chunk, ROLLBACK); now three, a third less CPU per read (measured).
        reader = create_async_role_engine(settings, "reader")
        store = EventReader(reader)
        ingest = IngestService(
            appender, limits(settings), max_events=settings.max_events_per_request
        )
        queries = QueryService(store, cursor_key=settings.cursor_key.encode())
        integrity = IntegrityService(TreeReader(reader), queries, public_key(settings))
        keys = KeyReader(reader)
        authenticator = Authenticator(
            keys,
            RateLimiter(client, settings.key("ratelimit")),
            ttl_s=settings.key_cache_s,
            default_rate_per_s=settings.rate_limit_per_s,
            default_burst=settings.rate_limit_burst,
        )
        # The tail has a client of its own: it gives up on Redis fast and reads the database.
        tail = TailService(
            TailReader(
                async_redis_client(settings, timeout_s=settings.tail_timeout_s, retry=False),
                settings.key("tail"),
            ),
            store,
            size=settings.tail_size,
            follow_max_s=settings.follow_max_s,
            follow_max_per_process=settings.follow_max_per_process,
            follow_max_per_key=settings.follow_max_per_key,
            follow_poll_s=settings.follow_poll_s,
            key_check_s=settings.key_cache_s,
        )
        exports = ExportService(
            store,
            max_per_process=settings.export_max_per_process,
            max_per_key=settings.export_max_per_key,
            key_check_s=settings.key_cache_s,
        )
        return cls(
            ingest=ingest,
            queries=queries,
            integrity=integrity,
            authenticator=authenticator,
            audit=SelfAudit(ingest, strict_reads=settings.strict_read_audit),
            keys=KeyDirectory(keys),
            store=store,
            appender=appender,
            tail=tail,
            exports=exports,
        )

    async def close(self) -> None:
        """Give back every connection (the app's shutdown, tests)."""
        await self.store.close()
        await self.appender.close()
        await self.tail.close()


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
            TimedEventWriter(EventWriter(engine, head_signer(settings))),
            batch_max=settings.writer_batch_max,
            block_ms=settings.writer_block_ms,
            linger_ms=settings.writer_linger_ms,
            claim_idle_ms=int(settings.writer_claim_idle_s * 1000),
            max_attempts=settings.writer_max_attempts,
            # After each COMMIT: metrics, then the batch joins the tail cache (never
            # before it is stored).
            on_commit=[record_batch, TailUpdater(tail_cache(settings, client)).record_batch],
        )
        return cls(
            settings=settings, writer=writer, leases=cls.leases_for(settings, client), stream=stream
        )

    @staticmethod
    def leases_for(settings: Settings, client: redis.Redis) -> SlotLeases:
        return SlotLeases(client, settings.key("writer", "slot"), settings.writer_lease_s)
