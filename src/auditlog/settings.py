"""Settings: read once at start-up from AUDITLOG_* environment variables, then passed down."""

from __future__ import annotations

import base64
import binascii
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.engine import URL, make_url

PREFIX = "AUDITLOG_"
# Settings read from a variable another tool owns, by the name that tool gives it.
FOREIGN = {"metrics_dir": "PROMETHEUS_MULTIPROC_DIR"}

Role = Literal["owner", "writer", "reader"]
ROLE_NAMES: dict[Role, str] = {
    "owner": "auditlog_owner",
    "writer": "auditlog_writer",
    "reader": "auditlog_reader",
}

# Redis ACL users, one per role (storage/redis_users.py says what each may do): the API, the
# batch writers, Celery's broker connection (worker), Flower.
RedisRole = Literal["api", "writer", "broker", "flower"]
REDIS_USERS: dict[RedisRole, str] = {
    "api": "auditlog-api",
    "writer": "auditlog-writer",
    "broker": "auditlog-broker",
    "flower": "auditlog-flower",
}


class SettingsError(Exception):
    """A setting is missing or malformed; the message names the variable."""


def _default_migrations_dir() -> Path:
    checkout = Path(__file__).resolve().parents[2] / "migrations"
    return checkout if checkout.is_dir() else Path.cwd() / "migrations"


def _default_viewer_dir() -> Path:
    checkout = Path(__file__).resolve().parents[2] / "viewer" / "dist"
    return checkout if checkout.is_dir() else Path.cwd() / "viewer" / "dist"


class Settings(BaseModel):
    """Every knob of the service. Field `x` is read from `AUDITLOG_X`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # PostgreSQL: one database, three roles (see docs/DESIGN.md). The URL carries host, port
    # and database; the user name comes from the role, the password from the role's setting.
    database_url: str = "postgresql://127.0.0.1:5432/auditlog"
    owner_password: str = ""
    writer_password: str = ""
    reader_password: str = ""
    # A superuser connection, used only by `auditlog setup-db` to create the database,
    # the owner role and the extension.
    admin_database_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    db_pool_size: int = Field(default=6, ge=1)  # queries one API process runs at once
    db_statement_timeout_ms: int = Field(default=30_000, ge=100)
    # The API's reads: a query that runs longer is cancelled and answered 422 (narrow it).
    read_statement_timeout_ms: int = Field(default=10_000, ge=100)

    # Redis: the ingest stream and its consumer group; Celery's broker may live elsewhere.
    # The URLs carry host, port and database; the user comes from the role, the password from
    # the role's setting (empty: Redis's default user, a Redis without ACLs).
    redis_url: str = "redis://127.0.0.1:6379/0"
    broker_url: str = ""  # empty: the same as redis_url
    redis_api_password: str = ""
    redis_writer_password: str = ""
    redis_broker_password: str = ""
    redis_flower_password: str = ""
    redis_prefix: str = Field(default="auditlog", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    redis_timeout_s: float = Field(default=2.0, gt=0)

    # Ingest limits.
    max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    max_events_per_request: int = Field(default=1000, ge=1)
    max_data_bytes: int = Field(default=64 * 1024, ge=64)
    max_event_bytes: int = Field(default=128 * 1024, ge=1024)
    max_string_chars: int = Field(default=16 * 1024, ge=64)
    max_depth: int = Field(default=32, ge=2)
    future_skew_s: float = Field(default=300.0, ge=0)
    # Refuse new events once this many are waiting in the stream (503 + Retry-After).
    backlog_limit: int = Field(default=1_000_000, ge=1)
    # Answer 202 only once Redis has the events on disk (fsynced to its AOF): WAITAOF on
    # Redis >= 7.2; on older ones, only a Redis with appendonly yes + appendfsync always is
    # accepted (it fsyncs every write before it replies). Not confirmed within the timeout:
    # 503 with the ids (the events are queued; resend them with the same ids).
    ack_fsync: bool = False
    ack_fsync_timeout_s: float = Field(default=1.0, gt=0, le=60)

    # The batch writer.
    writer_slots: int = Field(default=2, ge=1)
    writer_batch_max: int = Field(default=2000, ge=1)
    writer_block_ms: int = Field(default=200, ge=1)
    writer_linger_ms: int = Field(default=100, ge=0)
    writer_drain_s: float = Field(default=5.0, gt=0)
    writer_lease_s: float = Field(default=15.0, gt=1)
    writer_claim_idle_s: float = Field(default=60.0, gt=0)
    writer_max_attempts: int = Field(default=5, ge=1)

    # API keys: a revoked key stops working within key_cache_s on every API process. Rate
    # limits are per key (a token bucket in Redis); `auditlog keys limit` tightens one key.
    key_cache_s: float = Field(default=2.0, gt=0)
    rate_limit_per_s: float = Field(default=5000.0, gt=0)
    rate_limit_burst: int = Field(default=10000, ge=1)
    # When true, a read whose audit record cannot be enqueued is answered 503 instead.
    strict_read_audit: bool = False
    # The secret that authenticates list cursors (HMAC-SHA256): every API instance of one
    # deployment needs the same one (`make run` and compose generate it into .env).
    cursor_key: str = ""
    # Peers whose X-Real-IP header names the client (nginx sets it; nothing else may): an
    # audit record's `ip` is that header from these peers, else the peer's own address.
    trusted_proxies: str = "127.0.0.1,::1"

    # The Ed25519 key that signs tree heads (writers). API processes need only the public
    # key: from public_key_path when set, else derived from the signing key file.
    signing_key_path: Path = Path("var/signing-key.pem")
    public_key_path: Path | None = None

    # Transparency (docs/INTEGRITY.md): C2SP checkpoints signed with the same key under the
    # log's origin, published by the worker every checkpoint_interval_s when the log grew
    # and submitted to the witnesses of a tlog-policy file (their URLs); hash tiles (and
    # the checkpoint) readable without a key when public_tiles.
    log_origin: str = Field(
        default_factory=lambda: f"{socket.gethostname()}/auditlog",
        pattern=r"^[^\s+\x00-\x1f]{1,200}$",
    )
    checkpoint_interval_s: float = Field(default=5.0, gt=0)
    witness_policy: Path | None = None
    witness_timeout_s: float = Field(default=5.0, gt=0, le=60)
    public_tiles: bool = False

    # Operations: the worker's Prometheus exporter (0: none) and Flower's basic auth.
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)
    worker_metrics_address: str = "127.0.0.1"
    flower_user: str = Field(default="auditlog", pattern=r"^[^:\s]{1,64}$")
    flower_password: str = ""
    # Flower's control API (shut a worker down, grow or shrink its pool, revoke, rate-limit
    # or send tasks) is off unless this is true: watching needs none of it, and its basic
    # auth is all that would stand between a leaked password and the writers.
    flower_control: bool = False
    # Where prometheus-client's multiprocess mode keeps the values of every process of one
    # API instance or worker. Read from PROMETHEUS_MULTIPROC_DIR, the variable the library
    # itself reads (it must be set before the library is imported): None is one process.
    metrics_dir: Path | None = None

    # The live tail (a cache in Redis kept by the writer) and the long-lived reads: follow
    # (Server-Sent Events) and export. See docs/DESIGN.md, "Tail, follow, export".
    # The most counts one GET /v1/stats/buckets answers (buckets × groups).
    max_bucket_cells: int = Field(default=10_000, ge=100)
    tail_size: int = Field(default=1000, ge=1, le=100_000)  # events per cached tail
    tail_timeout_s: float = Field(default=0.25, gt=0)  # a slower cache is skipped for the DB
    follow_max_s: float = Field(default=300.0, gt=0)  # a follow stream ends after this
    # Long answers are coroutines, not threads: a follower costs a few KiB while it waits.
    follow_max_per_process: int = Field(default=64, ge=1)  # more followers get 503
    follow_max_per_key: int = Field(default=8, ge=1)  # per key and process: a key's share
    follow_poll_s: float = Field(default=0.25, gt=0)  # how often a follower looks for news
    export_max_per_process: int = Field(default=4, ge=1)  # more exports get 503
    export_max_per_key: int = Field(default=2, ge=1)  # per key and process: a key's share

    # The auditors' viewer at /viewer/: the built files (scripts/setup.sh builds viewer/
    # into viewer/dist), and the log's public key pinned in its configuration (base64 of the
    # raw 32 bytes, as /v1/integrity/public-key gives it): Verify then refuses another key.
    viewer_dir: Path = Field(default_factory=_default_viewer_dir)
    viewer_public_key: str = ""

    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "json"
    migrations_dir: Path = Field(default_factory=_default_migrations_dir)

    @field_validator("database_url", "admin_database_url")
    @classmethod
    def _parses_as_url(cls, value: str) -> str:
        make_url(value)
        return value

    @field_validator("viewer_public_key")
    @classmethod
    def _is_a_public_key(cls, value: str) -> str:
        if value:
            try:
                raw = base64.b64decode(value, validate=True)
            except binascii.Error:
                raise ValueError("is not standard base64") from None
            if len(raw) != 32:
                raise ValueError(f"is {len(raw)} bytes; an Ed25519 public key is 32")
        return value

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from AUDITLOG_* variables (os.environ by default)."""
        environ = os.environ if environ is None else environ
        known = cls.model_fields
        values: dict[str, object] = {}
        unknown = []
        for key, value in environ.items():
            if not key.startswith(PREFIX):
                continue
            name = key[len(PREFIX) :].lower()
            if name in known:
                values[name] = value
            else:
                unknown.append(key)
        for name, key in FOREIGN.items():
            if environ.get(key):
                values[name] = environ[key]
        if unknown:
            raise SettingsError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        values.update(overrides)
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{PREFIX}{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
            )
            raise SettingsError(problems) from None

    @property
    def database_name(self) -> str:
        return make_url(self.database_url).database or "auditlog"

    def url_for(self, role: Role) -> URL:
        """The SQLAlchemy URL (psycopg driver) for one of the three roles."""
        password = {
            "owner": self.owner_password,
            "writer": self.writer_password,
            "reader": self.reader_password,
        }[role]
        url = make_url(self.database_url).set(
            drivername="postgresql+psycopg", username=ROLE_NAMES[role]
        )
        return url.set(password=password) if password else url

    @property
    def admin_url(self) -> URL:
        return make_url(self.admin_database_url).set(drivername="postgresql+psycopg")

    def redis_password_for(self, role: RedisRole) -> str:
        """The password of one role's Redis user (empty: it has none)."""
        return {
            "api": self.redis_api_password,
            "writer": self.redis_writer_password,
            "broker": self.redis_broker_password,
            "flower": self.redis_flower_password,
        }[role]

    def redis_url_for(self, role: RedisRole) -> str:
        """The Redis URL one role connects with: its ACL user and password, if it has one."""
        base = (
            (self.broker_url or self.redis_url) if role in ("broker", "flower") else self.redis_url
        )
        password = self.redis_password_for(role)
        if not password:
            return base
        parts = urlsplit(base)
        where = parts.netloc.rpartition("@")[2]
        user = f"{quote(REDIS_USERS[role], safe='')}:{quote(password, safe='')}"
        return urlunsplit(parts._replace(netloc=f"{user}@{where}"))

    @property
    def celery_broker_url(self) -> str:
        """Celery's broker, as the worker connects to it (Flower: redis_url_for("flower"))."""
        return self.redis_url_for("broker")

    def key(self, *parts: str) -> str:
        """A Redis key under this deployment's prefix."""
        return ":".join((self.redis_prefix, *parts))
