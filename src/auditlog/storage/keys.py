"""API keys in PostgreSQL: read by every API process, changed only by the owner (CLI)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, insert, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

from auditlog.errors import Unavailable
from auditlog.storage.schema import api_keys


class KeyExists(Exception):
    """A key with that name (or, astronomically unlikely, that token) exists already."""


@dataclass(frozen=True)
class ApiKey:
    name: str
    scope: str
    services: tuple[str, ...] = ()
    rate_per_s: float | None = None
    burst: int | None = None
    created_at: datetime | None = None
    revoked_at: datetime | None = None


def _key(row: object) -> ApiKey:
    return ApiKey(
        name=row.name,  # type: ignore[attr-defined]
        scope=row.scope,  # type: ignore[attr-defined]
        services=tuple(row.services),  # type: ignore[attr-defined]
        rate_per_s=row.rate_per_s,  # type: ignore[attr-defined]
        burst=row.burst,  # type: ignore[attr-defined]
        created_at=row.created_at,  # type: ignore[attr-defined]
        revoked_at=row.revoked_at,  # type: ignore[attr-defined]
    )


_ACTIVE = select(api_keys).where(api_keys.c.revoked_at.is_(None))
_ALL = select(api_keys).order_by(api_keys.c.name)
_DOWN = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)


class KeyReader:
    """The keys as every API process reads them (asyncio, reader role)."""

    def __init__(self, engine: AsyncEngine):
        self._engine = engine

    async def active(self) -> dict[bytes, ApiKey]:
        """Every key not revoked, by the SHA-256 of its token."""
        try:
            async with self._engine.connect() as conn:
                return {bytes(row.token_hash): _key(row) for row in await conn.execute(_ACTIVE)}
        except _DOWN as exc:
            raise Unavailable("the database does not answer; try again shortly") from exc

    async def all(self) -> list[ApiKey]:
        try:
            async with self._engine.connect() as conn:
                return [_key(row) for row in await conn.execute(_ALL)]
        except _DOWN as exc:
            raise Unavailable("the database does not answer; try again shortly") from exc


class KeyStore:
    """Keys as the owner changes them (the `auditlog keys` command)."""

    def __init__(self, engine: Engine):
        self._engine = engine

    def active(self) -> dict[bytes, ApiKey]:
        """Every key not revoked, by the SHA-256 of its token."""
        with self._engine.connect() as conn:
            return {bytes(row.token_hash): _key(row) for row in conn.execute(_ACTIVE)}

    def all(self) -> list[ApiKey]:
        with self._engine.connect() as conn:
            return [_key(row) for row in conn.execute(_ALL)]

    def create(self, key: ApiKey, token_hash: bytes) -> None:
        values = {
            "name": key.name,
            "token_hash": token_hash,
            "scope": key.scope,
            "services": list(key.services),
            "rate_per_s": key.rate_per_s,
            "burst": key.burst,
        }
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(api_keys).values(**values))
        except sa_exc.IntegrityError as exc:
            raise KeyExists(key.name) from exc

    def revoke(self, name: str) -> bool:
        """Revoke a live key; False if there is none of that name."""
        with self._engine.begin() as conn:
            result = conn.execute(
                update(api_keys)
                .where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=func.now())
            )
        return result.rowcount == 1

    def set_limits(self, name: str, rate_per_s: float | None, burst: int | None) -> bool:
        with self._engine.begin() as conn:
            result = conn.execute(
                update(api_keys)
                .where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
                .values(rate_per_s=rate_per_s, burst=burst)
            )
        return result.rowcount == 1
