"""Database engines: one per role and per process, created at start-up."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Engine, create_engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from auditlog.settings import Role, Settings


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def create_role_engine(
    settings: Settings, role: Role, *, pool_size: int | None = None, autocommit: bool = False
) -> Engine:
    """An engine that connects as `role`, with bounded waits everywhere.

    `autocommit`: each statement is its own transaction, with no BEGIN and ROLLBACK round
    trips around it; for the read path, whose statements only read an append-only log (a
    read that needs one snapshot across statements asks for a transaction itself).
    """
    return create_engine(
        settings.url_for(role), **_engine_options(settings, role, pool_size, autocommit)
    )


def create_async_role_engine(
    settings: Settings, role: Role, *, pool_size: int | None = None, autocommit: bool = True
) -> AsyncEngine:
    """The same as create_role_engine for asyncio (the API's reads): psycopg's async
    connections in SQLAlchemy's async pool, autocommit unless asked otherwise."""
    return create_async_engine(
        settings.url_for(role), **_engine_options(settings, role, pool_size, autocommit)
    )


def _engine_options(
    settings: Settings, role: Role, pool_size: int | None, autocommit: bool
) -> dict[str, Any]:
    return dict(
        pool_size=pool_size or settings.db_pool_size,
        max_overflow=0,
        pool_timeout=5,
        # A pooled connection to a PostgreSQL that restarted is found dead and replaced
        # instead of failing the next request.
        pool_pre_ping=True,
        json_serializer=_dumps,
        json_deserializer=orjson.loads,
        connect_args={
            "connect_timeout": 3,
            "application_name": f"auditlog-{role}",
            "options": f"-c statement_timeout={settings.db_statement_timeout_ms}",
        },
        **({"isolation_level": "AUTOCOMMIT"} if autocommit else {}),
    )
