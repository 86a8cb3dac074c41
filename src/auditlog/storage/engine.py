"""Database engines: every connection the package opens is made here, with bounded waits."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Engine, NullPool, create_engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from auditlog.settings import Role, Settings


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _connection_options(
    settings: Settings, name: str, statement_timeout_ms: int | None = None
) -> dict[str, Any]:
    """What every engine has: connect and statement timeouts, JSON through orjson, a name
    that says in pg_stat_activity (and the server's log) who connected."""
    timeout = statement_timeout_ms or settings.db_statement_timeout_ms
    return {
        "json_serializer": _dumps,
        "json_deserializer": orjson.loads,
        "connect_args": {
            "connect_timeout": 3,
            "application_name": f"auditlog-{name}",
            "options": f"-c statement_timeout={timeout}",
        },
    }


def _role_options(
    settings: Settings,
    role: Role,
    pool_size: int | None,
    autocommit: bool,
    statement_timeout_ms: int | None = None,
) -> dict[str, Any]:
    return dict(
        pool_size=pool_size or settings.db_pool_size,
        max_overflow=0,
        pool_timeout=5,
        # A pooled connection to a PostgreSQL that restarted is found dead and replaced
        # instead of failing the next request.
        pool_pre_ping=True,
        **_connection_options(settings, role, statement_timeout_ms),
        **({"isolation_level": "AUTOCOMMIT"} if autocommit else {}),
    )


def create_role_engine(
    settings: Settings, role: Role, *, pool_size: int | None = None, autocommit: bool = False
) -> Engine:
    """An engine that connects as `role`, with bounded waits everywhere.

    `autocommit`: each statement is its own transaction, with no BEGIN and ROLLBACK round
    trips around it; for the read path, whose statements only read an append-only log (a
    read that needs one snapshot across statements asks for a transaction itself).
    """
    return create_engine(
        settings.url_for(role), **_role_options(settings, role, pool_size, autocommit)
    )


def create_async_role_engine(
    settings: Settings,
    role: Role,
    *,
    pool_size: int | None = None,
    autocommit: bool = True,
    statement_timeout_ms: int | None = None,
) -> AsyncEngine:
    """The same as create_role_engine for asyncio (the API's reads): psycopg's async
    connections in SQLAlchemy's async pool, autocommit unless asked otherwise."""
    return create_async_engine(
        settings.url_for(role),
        **_role_options(settings, role, pool_size, autocommit, statement_timeout_ms),
    )


def create_admin_engine(settings: Settings, *, database: str | None = None) -> Engine:
    """A superuser's engine (AUDITLOG_ADMIN_DATABASE_URL), for the few steps a migration
    cannot take: the owner role, the database, its extension. Autocommit (CREATE DATABASE
    runs outside a transaction), no pool: it is used once and let go."""
    url = settings.admin_url if database is None else settings.admin_url.set(database=database)
    return create_engine(
        url,
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
        **_connection_options(settings, "admin"),
    )
