"""API keys: tokens, who holds which scope, and which services a writer may speak for."""

from __future__ import annotations

import asyncio
import enum
import hashlib
import math
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from auditlog.errors import Forbidden, RateLimited, Unauthorized, Unavailable
from auditlog.services.envelope import SERVICE_PATTERN
from auditlog.storage.keys import ApiKey, KeyReader, KeyStore
from auditlog.storage.ratelimit import Bucket, RateLimiter

log = structlog.get_logger("auditlog.auth")

MISS_RELOAD_S = 0.1
TOKEN_PREFIX = "alk_"  # noqa: S105 - a prefix, not a secret: makes a leaked token recognizable
KEY_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_SERVICE = re.compile(SERVICE_PATTERN)


class Scope(enum.StrEnum):
    WRITE = "write"
    READ = "read"
    ADMIN = "admin"


def new_token() -> str:
    """A fresh secret: 256 bits from the OS's CSPRNG behind a recognizable prefix."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    """What is stored of a token. A fast hash is enough: the token has 256 bits of entropy."""
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class Principal:
    """Who a request's key says it is, and what that key may do."""

    name: str
    scope: Scope
    services: frozenset[str]
    rate_per_s: float
    burst: int

    def may(self, need: Scope) -> bool:
        return self.scope is Scope.ADMIN or self.scope is need

    @property
    def bound_services(self) -> frozenset[str] | None:
        """The services a write key may speak for; None: any (admin)."""
        return None if self.scope is Scope.ADMIN else self.services

    @property
    def default_service(self) -> str | None:
        return next(iter(self.services)) if len(self.services) == 1 else None

    @property
    def bucket(self) -> Bucket:
        return Bucket(self.name, self.rate_per_s, self.burst)

    def rate_limited(self, wait_s: float) -> RateLimited:
        return RateLimited(
            f"key {self.name!r} is limited to {self.rate_per_s:g} requests/s (burst {self.burst})",
            max(1, math.ceil(wait_s)),
            wait_s,
        )


class Authenticator:
    """Token -> Principal, from an in-memory copy of the key table refreshed every few
    seconds, so that a revocation reaches every API process within `ttl_s`.

    One process is one event loop: the copy is reloaded by one task at a time, while the
    requests that arrive meanwhile are answered from the copy they find.
    """

    def __init__(
        self,
        keys: KeyReader,
        limiter: RateLimiter,
        *,
        ttl_s: float,
        default_rate_per_s: float,
        default_burst: int,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._keys = keys
        self._limiter = limiter
        self._ttl_s = ttl_s
        self._default_rate = default_rate_per_s
        self._default_burst = default_burst
        self._clock = clock
        self._cache: dict[bytes, ApiKey] | None = None
        self._loaded_at = 0.0
        self._loading: asyncio.Task[None] | None = None
        # Keys known to have spent their bucket, and until when (monotonic): refused before
        # any work is done for them, without asking Redis.
        self._empty_until: dict[str, float] = {}

    @property
    def ttl_s(self) -> float:
        return self._ttl_s

    async def _reload(self) -> None:
        try:
            self._cache = await self._keys.active()
        except Unavailable:
            if self._cache is None:
                raise
            # Keep serving with the keys we know (ingest must outlive a database outage);
            # revocations wait for the database to come back.
            log.warning("key table unreadable; using the last copy")
        self._loaded_at = self._clock()

    async def _active(self, max_age_s: float | None = None) -> dict[bytes, ApiKey]:
        max_age = self._ttl_s if max_age_s is None else max_age_s
        if self._cache is not None and self._clock() - self._loaded_at < max_age:
            return self._cache
        if self._loading is None:
            self._loading = asyncio.ensure_future(self._reload())
            self._loading.add_done_callback(self._loaded)
        if self._cache is not None and max_age_s is None:
            return self._cache  # older than ttl_s by at most the reload under way
        # Wait for the copy being loaded (shielded: a request cancelled meanwhile must not
        # cancel the load the others wait for).
        await asyncio.shield(self._loading)
        assert self._cache is not None
        return self._cache

    def _loaded(self, task: asyncio.Task[None]) -> None:
        self._loading = None
        if not task.cancelled():
            task.exception()  # retrieved here; the waiters re-raise it themselves

    async def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthorized("send Authorization: Bearer <token>", token_given=False)
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized(
                "use the Bearer scheme: Authorization: Bearer <token>", token_given=True
            )
        digest = token_hash(token)
        key = (await self._active()).get(digest)
        if key is None:
            # Perhaps a key created since the last reload: look again, but no more than ten
            # times a second, so that unknown tokens cannot hammer the database.
            key = (await self._active(max_age_s=MISS_RELOAD_S)).get(digest)
        # No timing leak: the only comparison is the table's lookup of the token's SHA-256,
        # whose bytes an attacker cannot steer towards a stored digest one at a time.
        if key is None:
            raise Unauthorized("the token is not one of a live key", token_given=True)
        return Principal(
            name=key.name,
            scope=Scope(key.scope),
            services=frozenset(key.services),
            rate_per_s=key.rate_per_s or self._default_rate,
            burst=key.burst or self._default_burst,
        )

    async def still_valid(self, principal: Principal) -> bool:
        """Whether the principal's key is still live (long answers ask now and then)."""
        keys = await self._active()
        return any(key.name == principal.name for key in keys.values())

    def refuse_if_empty(self, principal: Principal) -> None:
        """RateLimited, at no cost, if the key's bucket is known to be empty right now."""
        until = self._empty_until.get(principal.name)
        if until is None:
            return
        wait = until - self._clock()
        if wait <= 0:
            del self._empty_until[principal.name]
            return
        raise principal.rate_limited(wait)

    def note_empty(self, principal: Principal, wait_s: float) -> None:
        """Remember that the key's bucket is empty for wait_s (Redis said so)."""
        if len(self._empty_until) > 10_000:  # bounded by the number of keys; be safe
            self._empty_until.clear()
        self._empty_until[principal.name] = self._clock() + wait_s

    async def throttle(self, principal: Principal) -> None:
        """Spend one request from the key's bucket; RateLimited when it is empty."""
        self.refuse_if_empty(principal)
        try:
            wait = await self._limiter.take(principal.bucket)
        except Exception as exc:  # Redis away: fail open; ingest will answer 503 anyway
            log.warning("rate limiter unavailable; not limiting", error=str(exc))
            return
        if wait > 0:
            self.note_empty(principal, wait)
            raise principal.rate_limited(wait)

    async def charge(self, principal: Principal, cost: int) -> None:
        """Spend `cost` tokens for work a refused request caused (into debt if need be)."""
        try:
            wait = await self._limiter.charge(principal.bucket, cost)
        except Exception as exc:  # Redis away: nothing to charge against
            log.warning("rate limiter unavailable; not charging", error=str(exc))
            return
        if wait > 0:
            self.note_empty(principal, wait)

    @staticmethod
    def authorize(principal: Principal, need: Scope | None, what: str) -> None:
        if need is None:
            raise Forbidden(f"{what} is not open to API keys")
        if not principal.may(need):
            raise Forbidden(
                f"key {principal.name!r} has scope {principal.scope.value}; {what} needs "
                f"{need.value}"
            )


class KeyDirectory:
    """The keys as GET /v1/keys lists them (no secrets)."""

    def __init__(self, keys: KeyReader):
        self._keys = keys

    async def list(self) -> list[ApiKey]:
        return await self._keys.all()


@dataclass(frozen=True)
class NewKey:
    key: ApiKey
    token: str


class KeyAdmin:
    """Creates, lists and revokes keys (the `auditlog keys` command)."""

    def __init__(self, keys: KeyStore, on_change: Callable[[str, ApiKey], None] | None = None):
        self._keys = keys
        self._on_change = on_change

    def create(
        self,
        name: str,
        scope: str,
        services: list[str],
        *,
        rate_per_s: float | None = None,
        burst: int | None = None,
    ) -> NewKey:
        if not KEY_NAME.fullmatch(name):
            raise ValueError(f"key name must match {KEY_NAME.pattern}")
        kind = Scope(scope)
        bad = [s for s in services if not _SERVICE.fullmatch(s)]
        if bad:
            raise ValueError(f"not service names: {', '.join(bad)}")
        if kind is Scope.WRITE and not services:
            raise ValueError("a write key needs at least one --service")
        if kind is not Scope.WRITE and services:
            raise ValueError("only write keys are bound to services")
        key = ApiKey(name, kind.value, tuple(sorted(set(services))), rate_per_s, burst)
        token = new_token()
        self._keys.create(key, token_hash(token))
        self._changed("created", key)
        return NewKey(key, token)

    def revoke(self, name: str) -> bool:
        revoked = self._keys.revoke(name)
        if revoked:
            self._changed("revoked", ApiKey(name, ""))
        return revoked

    def set_limits(self, name: str, rate_per_s: float | None, burst: int | None) -> bool:
        changed = self._keys.set_limits(name, rate_per_s, burst)
        if changed:
            self._changed("limited", ApiKey(name, "", rate_per_s=rate_per_s, burst=burst))
        return changed

    def list(self) -> list[ApiKey]:
        return self._keys.all()

    def _changed(self, what: str, key: ApiKey) -> None:
        if self._on_change is not None:
            self._on_change(what, key)
