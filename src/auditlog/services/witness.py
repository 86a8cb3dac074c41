"""A transparency log witness (c2sp.org/tlog-witness): cosign a log's checkpoint only if it
is consistent with the last one cosigned for that log.

`auditlog witness` serves this over HTTP (witness_app.py); the log's publisher
(services/checkpoints.py) is its client. The rules, in the order the spec gives them:

    400  the body is not `old N`, proof lines, a blank line, a checkpoint; or old > size
    404  the checkpoint's origin is not a log this witness knows
    403  no valid signature by the log's key, or a signature by it that does not verify
    409  old is not the size last cosigned for the origin (the body says which, text/x.tlog.size)
    422  the consistency proof does not verify, a proof with old 0, or the same size with
         another root hash: the log shows this witness two histories
    200  the cosignature line(s); the new checkpoint is on disk before the answer
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from auditlog.integrity.checkpoint import CheckpointFormatError, SignedCheckpoint
from auditlog.integrity.merkle import EMPTY_ROOT
from auditlog.integrity.note import (
    Note,
    NoteFormatError,
    NoteSignature,
    NoteSigner,
    VerifierKey,
)
from auditlog.integrity.proofs import verify_consistency
from auditlog.storage.witness_state import LogState, WitnessState

log = structlog.get_logger("auditlog.witness")

MAX_PROOF_LINES = 63
_OLD = re.compile(r"old (0|[1-9][0-9]{0,18})")
TEXT = "text/plain; charset=utf-8"
SIZE = "text/x.tlog.size"


@dataclass(frozen=True)
class WitnessReply:
    status: int
    body: str
    content_type: str = TEXT


def origin_hash(origin: str) -> str:
    """How the monitoring interface names a log: SHA-256 of its origin, lowercase hex."""
    return hashlib.sha256(origin.encode()).hexdigest()


class WitnessService:
    def __init__(
        self,
        signer: NoteSigner,
        logs: Sequence[VerifierKey],
        state: WitnessState,
        *,
        clock: Callable[[], float] = time.time,
    ):
        self._signer = signer
        self._keys: dict[str, list[VerifierKey]] = {}
        for key in logs:
            self._keys.setdefault(key.name, []).append(key)
        self._state = state
        self._clock = clock
        self._by_hash = {origin_hash(origin): origin for origin in self._keys}

    @property
    def verifier_key(self) -> VerifierKey:
        return self._signer.verifier

    def add_checkpoint(self, body: bytes) -> WitnessReply:
        try:
            old, proof, signed = _parse_request(body)
        except ValueError as exc:
            return WitnessReply(400, f"{exc}\n")
        checkpoint = signed.checkpoint
        signatures = self._log_signatures(signed)
        if isinstance(signatures, WitnessReply):
            return signatures
        if old > checkpoint.tree_size:
            return WitnessReply(400, f"old size {old} is larger than the checkpoint's\n")
        with self._state.exclusive():
            current = self._state.get(checkpoint.origin)
            seen = current.tree_size if current is not None else 0
            if old != seen:
                return WitnessReply(409, f"{seen}\n", SIZE)
            problem = _inconsistency(
                old, proof, checkpoint.tree_size, checkpoint.root_hash, current
            )
            if problem is not None:
                log.warning(
                    "refused an inconsistent checkpoint",
                    origin=checkpoint.origin,
                    old=old,
                    tree_size=checkpoint.tree_size,
                    reason=problem,
                    checkpoint=signed.render(),
                )
                return WitnessReply(422, f"{problem}\n")
            text = signed.note.text
            cosignature = self._signer.sign(text, timestamp=int(self._clock()))
            kept = Note(text, signatures).with_signatures(cosignature)
            self._state.put(
                checkpoint.origin,
                LogState(checkpoint.tree_size, checkpoint.root_hash, kept.render()),
            )
        log.info("cosigned", origin=checkpoint.origin, tree_size=checkpoint.tree_size, old=old)
        return WitnessReply(200, cosignature.line())

    def _log_signatures(self, signed: SignedCheckpoint) -> tuple[NoteSignature, ...] | WitnessReply:
        """The log's valid signature lines, or the 404 or 403 that refuses the checkpoint."""
        keys = self._keys.get(signed.checkpoint.origin)
        if keys is None:
            return WitnessReply(404, f"unknown log origin {signed.checkpoint.origin[:100]!r}\n")
        claimed = [(k, s) for s in signed.note.signatures for k in keys if k.matches(s)]
        if not claimed or not all(k.verify(signed.note.text, s) for k, s in claimed):
            return WitnessReply(403, "no valid signature by the log's key\n")
        return tuple(s for _, s in claimed)

    def latest(self, hashed_origin: str) -> WitnessReply:
        """The latest checkpoint cosigned for the log whose origin hashes to this."""
        origin = self._by_hash.get(hashed_origin)
        state = self._state.get(origin) if origin is not None else None
        if state is None:
            return WitnessReply(404, "no checkpoint cosigned for this log\n")
        return WitnessReply(200, state.checkpoint)


def _parse_request(body: bytes) -> tuple[int, list[bytes], SignedCheckpoint]:
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise ValueError("the body is not UTF-8") from None
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise ValueError("no blank line between the old size and proof, and the checkpoint")
    lines = head.split("\n")
    old = _OLD.fullmatch(lines[0])
    if old is None:
        raise ValueError("the first line is `old <size>`")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise ValueError(f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof = []
    for line in lines[1:]:
        try:
            node = base64.b64decode(line, validate=True)
        except binascii.Error:
            raise ValueError("a proof line is not base64") from None
        if len(node) != 32:
            raise ValueError("a proof line is not a 32-byte hash")
        proof.append(node)
    try:
        signed = SignedCheckpoint.parse(note)
    except (NoteFormatError, CheckpointFormatError) as exc:
        raise ValueError(f"not a checkpoint: {exc}") from None
    return int(old.group(1)), proof, signed


def _inconsistency(
    old: int, proof: list[bytes], size: int, root_hash: bytes, current: LogState | None
) -> str | None:
    """Why the checkpoint cannot follow the current state, or None if it can."""
    if size == 0 and root_hash != EMPTY_ROOT:
        return "a checkpoint of size 0 has the empty tree's root hash"
    if old == 0:
        return "a proof from size 0 is empty" if proof else None
    assert current is not None
    if old == size:
        if proof or root_hash != current.root_hash:
            return f"the checkpoint at size {size} has another root hash than the one cosigned"
        return None
    if not verify_consistency(old, size, proof, current.root_hash, root_hash):
        return f"the consistency proof from size {old} to {size} does not verify"
    return None
