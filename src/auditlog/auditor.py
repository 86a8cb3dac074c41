"""What `auditlog verify` checks about checkpoints: the log's signature, the witnesses'
cosignatures a policy asks for, and, from tiles alone, that today's log extends a
checkpoint an auditor saved.

The tiles and the checkpoint are read over HTTP from the API (`--url`), with a read key if
the deployment does not make them public; nothing else of the server is believed: every
hash read is checked against the signed roots.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

from auditlog.integrity.checkpoint import (
    SignedCheckpoint,
    check_checkpoint,
    describe,
    log_verifier,
)
from auditlog.integrity.keys import PublicKey
from auditlog.integrity.merkle import consistency_path, root
from auditlog.integrity.note import VerifierKey
from auditlog.integrity.policy import Policy
from auditlog.integrity.proofs import verify_consistency
from auditlog.integrity.tiles import TileRef, TileTree

TIMEOUT_S = 30.0
MAX_CHECKPOINT_BYTES = 1 << 20


class Unreachable(Exception):
    """The log's API did not answer as expected (exit status 2: nothing was checked)."""


@dataclass
class Outcome:
    """What was checked: ok, and the lines saying what (and what failed)."""

    ok: bool = True
    lines: list[str] = field(default_factory=list)

    def fail(self, line: str) -> None:
        self.ok = False
        self.lines.append(line)


class LogClient:
    """The log's checkpoint and tiles, read over HTTP."""

    def __init__(self, url: str, token: str | None = None, *, timeout_s: float = TIMEOUT_S):
        self._base = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout_s = timeout_s
        self.requests = 0

    def _get(self, path: str, limit: int) -> bytes:
        self.requests += 1
        request = urllib.request.Request(  # noqa: S310 - an auditor's own URL
            f"{self._base}/{path}", headers=self._headers
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:  # noqa: S310
                body: bytes = response.read(limit + 1)
        except urllib.error.HTTPError as exc:
            detail = exc.read(500).decode(errors="replace")
            raise Unreachable(f"GET /{path}: {exc.code} {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise Unreachable(f"GET /{path}: {getattr(exc, 'reason', exc)}") from None
        if len(body) > limit:
            raise Unreachable(f"GET /{path}: the answer is larger than {limit} bytes")
        return body

    def checkpoint(self) -> SignedCheckpoint:
        body = self._get("v1/log/checkpoint", MAX_CHECKPOINT_BYTES)
        try:
            return SignedCheckpoint.parse(body)
        except ValueError as exc:
            raise Unreachable(f"the log's checkpoint is not a checkpoint: {exc}") from None

    def tile(self, ref: TileRef) -> bytes:
        return self._get(f"v1/log/{ref.path()}", ref.width * 32)


def log_keys(key: PublicKey | None, policy: Policy | None, origin: str) -> list[VerifierKey]:
    """The keys a checkpoint of `origin` may be signed with: a verifier key as given, a raw
    key under the checkpoint's origin (the log's key name), and a policy's log keys."""
    keys = [log.key for log in policy.logs] if policy is not None else []
    if key is not None:
        keys.append(key.vkey if key.vkey is not None else log_verifier(key.raw, origin))
    return keys


def check_published(
    signed: SignedCheckpoint,
    key: PublicKey | None,
    policy: Policy | None,
    *,
    what: str = "the latest checkpoint",
    now: Callable[[], float] = time.time,
) -> Outcome:
    """Is this checkpoint signed by the log and cosigned as the policy requires?"""
    outcome = Outcome()
    keys = log_keys(key, policy, signed.checkpoint.origin)
    verdict = check_checkpoint(signed, keys, policy, now=int(now()))
    line = f"{what}: " + describe(verdict, policy, signed.checkpoint.tree_size)
    if verdict.trusted:
        outcome.lines.append(line)
    else:
        outcome.fail(line)
    return outcome


def check_extends(
    client: LogClient,
    saved: SignedCheckpoint,
    key: PublicKey | None,
    policy: Policy | None,
    *,
    now: Callable[[], float] = time.time,
) -> Outcome:
    """From the log's tiles alone: today's checkpoint is trusted and extends `saved`."""
    latest = client.checkpoint()
    outcome = check_published(latest, key, policy, now=now)
    # The saved one was trusted when it was saved: only the log's signature is checked again.
    logs_only = Policy(logs=policy.logs) if policy is not None else None
    old_check = check_published(saved, key, logs_only, what="the saved checkpoint", now=now)
    outcome.lines += old_check.lines
    outcome.ok &= old_check.ok
    if not outcome.ok:
        return outcome
    old, new = saved.checkpoint, latest.checkpoint
    if old.origin != new.origin:
        outcome.fail(f"the saved checkpoint is of log {old.origin}, today's of {new.origin}")
        return outcome
    if old.tree_size > new.tree_size:
        outcome.fail(
            f"the log's latest checkpoint has {new.tree_size} entries, fewer than the "
            f"{old.tree_size} of the saved one: the log was cut or rolled back"
        )
        return outcome
    tiles = TileTree(new.tree_size, client.tile)
    try:
        computed = root(new.tree_size, tiles.node)
        proof = consistency_path(old.tree_size, new.tree_size, tiles.node)
    except ValueError as exc:  # a tile of the wrong length
        outcome.fail(f"the log's tiles are malformed: {exc}")
        return outcome
    if computed != new.root_hash:
        outcome.fail(
            f"the log's tiles do not add up to the root of its checkpoint at size {new.tree_size}"
        )
    elif not verify_consistency(old.tree_size, new.tree_size, proof, old.root_hash, new.root_hash):
        outcome.fail(
            f"INCONSISTENT: the log at size {new.tree_size} does not extend the saved "
            f"checkpoint at size {old.tree_size}: the history it showed then was rewritten"
        )
    else:
        outcome.lines.append(
            f"consistent: the log at size {new.tree_size} extends the saved checkpoint at "
            f"size {old.tree_size} (proof of {len(proof)} hashes from {tiles.fetched} tiles)"
        )
    return outcome
