"""Token -> key: by the SHA-256 of the token, compared in constant time; no token kept."""

from __future__ import annotations

import hashlib
import hmac
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

    def active(self) -> dict[bytes, ApiKey]:
        self.loads += 1
        return dict(self.keys)


class NoLimits:
    def take(self, name: str, rate_per_s: float, burst: int) -> float:
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
    def test_the_right_token_is_the_key(self):
        principal = authenticator(KeyTable({token_hash(TOKEN): KEY})).authenticate(
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
    def test_anything_else_is_unauthorized(self, header: str):
        with pytest.raises(Unauthorized) as refused:
            authenticator(KeyTable({token_hash(TOKEN): KEY})).authenticate(header)
        assert TOKEN not in str(refused.value)

    def test_the_comparison_is_constant_time(self, monkeypatch: pytest.MonkeyPatch):
        compared: list[tuple[Any, Any]] = []
        original = hmac.compare_digest

        def compare_digest(a: bytes, b: bytes) -> bool:
            compared.append((a, b))
            return original(a, b)

        monkeypatch.setattr(auth.hmac, "compare_digest", compare_digest)
        authenticator(KeyTable({token_hash(TOKEN): KEY})).authenticate(f"Bearer {TOKEN}")
        # Digests are compared (equal length whatever the token), never the tokens.
        assert compared == [(token_hash(TOKEN), token_hash(TOKEN))]

    def test_no_token_is_kept_only_hashes(self):
        table = KeyTable({token_hash(TOKEN): KEY})
        checker = authenticator(table)
        checker.authenticate(f"Bearer {TOKEN}")
        assert TOKEN not in repr(vars(checker))
        assert set(checker._active()) == {token_hash(TOKEN)}

    def test_an_unknown_token_reloads_at_most_every_tenth_of_a_second(self):
        now = [0.0]
        table = KeyTable({token_hash(TOKEN): KEY})
        checker = authenticator(table, now)
        checker.authenticate(f"Bearer {TOKEN}")
        for _ in range(50):
            with pytest.raises(Unauthorized):
                checker.authenticate("Bearer alk_nobody")
        assert table.loads == 1
        now[0] = auth.MISS_RELOAD_S
        late = new_token()
        table.keys[token_hash(late)] = ApiKey("late", "read")
        assert checker.authenticate(f"Bearer {late}").name == "late"
        assert table.loads == 2
