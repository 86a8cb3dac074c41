"""Token -> key: by the SHA-256 of the token, never by the token itself; no token kept."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest

from auditlog.errors import Unauthorized
from auditlog.services import auth
from auditlog.services.auth import Authenticator, Scope, new_token, token_hash
from auditlog.storage.keys import ApiKey


class KeyTable:
    """The active keys as KeyStore.active() returns them: by token hash."""

    def __init__(self, keys: dict[bytes, ApiKey]):
        self.keys = keys
        self.loads = 0

    async def active(self) -> dict[bytes, ApiKey]:
        self.loads += 1
        return dict(self.keys)


class NoLimits:
    async def take(self, bucket: object) -> float:
        return 0.0


TOKEN = new_token()
KEY = ApiKey("ops", "admin")


def authenticator(table: KeyTable, now: list[float] | None = None) -> Authenticator:
    clock = now or [0.0]
    return Authenticator(
        table,  # type: ignore[arg-type]
        NoLimits(),  # type: ignore[arg-type]
        ttl_s=2.0,
        default_rate_per_s=10.0,
        default_burst=10,
        clock=lambda: clock[0],
    )


class TestTokens:
    def test_a_token_is_256_random_bits_behind_a_prefix(self):
        tokens = {new_token() for _ in range(100)}
        assert len(tokens) == 100
        assert all(t.startswith("alk_") and len(t) == 4 + 43 for t in tokens)

    def test_what_is_stored_is_the_sha256(self):
        assert token_hash(TOKEN) == hashlib.sha256(TOKEN.encode()).digest()


class TestAuthenticate:
    async def test_the_right_token_is_the_key(self):
        principal = await authenticator(KeyTable({token_hash(TOKEN): KEY})).authenticate(
            f"Bearer {TOKEN}"
        )
        assert (principal.name, principal.scope) == ("ops", Scope.ADMIN)

    @pytest.mark.parametrize(
        "header",
        [
            f"Bearer {TOKEN[:-1]}",
            f"Bearer {TOKEN}x",
            f"Bearer {TOKEN.upper()}",
            f"Bearer {TOKEN[:20]}",
            f"Basic {TOKEN}",
            TOKEN,
            "Bearer ",
            "",
        ],
    )
    async def test_anything_else_is_unauthorized(self, header: str):
        with pytest.raises(Unauthorized) as refused:
            await authenticator(KeyTable({token_hash(TOKEN): KEY})).authenticate(header)
        assert TOKEN not in str(refused.value)

    async def test_only_digests_are_compared(self):
        # What could leak through timing is a comparison of secret-derived bytes: the only
        # one is the table's lookup, of the token's SHA-256, which an attacker cannot steer
        # byte by byte towards a stored digest. The token itself is never compared.
        looked_up: list[Any] = []

        class Recording(dict[bytes, ApiKey]):
            def get(self, key: Any, default: Any = None) -> Any:
                looked_up.append(key)
                return super().get(key, default)

        class Table(KeyTable):
            async def active(self) -> dict[bytes, ApiKey]:
                return Recording(self.keys)

        checker = authenticator(Table({token_hash(TOKEN): KEY}))
        await checker.authenticate(f"Bearer {TOKEN}")
        with pytest.raises(Unauthorized):
            await checker.authenticate(f"Bearer {TOKEN}x")
        assert looked_up[0] == token_hash(TOKEN)
        assert all(isinstance(k, bytes) and len(k) == 32 for k in looked_up)
        assert token_hash(f"{TOKEN}x") in looked_up

    async def test_no_token_is_kept_only_hashes(self):
        table = KeyTable({token_hash(TOKEN): KEY})
        checker = authenticator(table)
        await checker.authenticate(f"Bearer {TOKEN}")
        assert TOKEN not in repr(vars(checker))
        assert set(await checker._active()) == {token_hash(TOKEN)}

    async def test_an_unknown_token_reloads_at_most_every_tenth_of_a_second(self):
        now = [0.0]
        table = KeyTable({token_hash(TOKEN): KEY})
        checker = authenticator(table, now)
        await checker.authenticate(f"Bearer {TOKEN}")
        for _ in range(50):
            with pytest.raises(Unauthorized):
                await checker.authenticate("Bearer alk_nobody")
        assert table.loads == 1
        now[0] = auth.MISS_RELOAD_S
        late = new_token()
        table.keys[token_hash(late)] = ApiKey("late", "read")
        assert (await checker.authenticate(f"Bearer {late}")).name == "late"
        assert table.loads == 2

    async def test_a_stale_copy_answers_while_one_reload_runs(self):
        now = [0.0]
        table = KeyTable({token_hash(TOKEN): KEY})
        checker = authenticator(table, now)
        await checker.authenticate(f"Bearer {TOKEN}")
        now[0] = 5.0  # past ttl_s: the next request starts a reload and does not wait
        del table.keys[token_hash(TOKEN)]
        assert (await checker.authenticate(f"Bearer {TOKEN}")).name == "ops"
        await asyncio.sleep(0)  # the reload runs
        assert table.loads == 2
        with pytest.raises(Unauthorized):  # revoked: refused once the copy is reloaded
            await checker.authenticate(f"Bearer {TOKEN}")
