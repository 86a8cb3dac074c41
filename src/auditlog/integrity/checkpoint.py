"""C2SP checkpoints (c2sp.org/tlog-checkpoint): the log's tree head as a signed note.

    <origin>
    <tree size>
    <base64 root hash>

    — <origin> base64(key ID || Ed25519 signature)
    — <witness> base64(key ID || timestamp || Ed25519 signature)   (cosignatures, if any)

The log signs with its one Ed25519 key under the key name `origin`; witnesses add
cosignatures (c2sp.org/tlog-cosignature). `check_checkpoint` says whether a checkpoint is
signed by the log and cosigned as a policy (integrity/policy.py) requires.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from auditlog.integrity.note import (
    ED25519,
    Note,
    NoteSignature,
    NoteSigner,
    VerifierKey,
    cosignature_timestamp,
)
from auditlog.integrity.policy import Policy

_SIZE = re.compile(r"0|[1-9][0-9]{0,18}")
HASH_BYTES = 32
# A cosignature stamped later than this past the verifier's clock is not counted.
COSIGNATURE_FUTURE_SKEW_S = 300


class CheckpointFormatError(ValueError):
    """The text is not a checkpoint."""


@dataclass(frozen=True)
class Checkpoint:
    """The note text of a checkpoint: origin, tree size, root hash (and extension lines)."""

    origin: str
    tree_size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        lines = [self.origin, str(self.tree_size), base64.b64encode(self.root_hash).decode()]
        return "\n".join([*lines, *self.extensions]) + "\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        if not text.endswith("\n"):
            raise CheckpointFormatError("a checkpoint's text ends in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3 or any(not line for line in lines):
            raise CheckpointFormatError("a checkpoint has at least three non-empty lines")
        origin, size, root = lines[:3]
        if not _SIZE.fullmatch(size):
            raise CheckpointFormatError(f"the tree size {size[:30]!r} is not a decimal number")
        try:
            root_hash = base64.b64decode(root, validate=True)
        except binascii.Error:
            raise CheckpointFormatError("the root hash is not base64") from None
        if len(root_hash) != HASH_BYTES:
            raise CheckpointFormatError("the root hash is not 32 bytes")
        return cls(origin, int(size), root_hash, tuple(lines[3:]))


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint and the note that carries it (with every signature line it has)."""

    checkpoint: Checkpoint
    note: Note

    @classmethod
    def parse(cls, data: bytes | str) -> SignedCheckpoint:
        """Read a checkpoint as GET /v1/log/checkpoint serves it (ValueError if it is not)."""
        note = Note.parse(data)
        return cls(Checkpoint.parse(note.text), note)

    @classmethod
    def sign(cls, checkpoint: Checkpoint, signer: NoteSigner) -> SignedCheckpoint:
        text = checkpoint.text()
        return cls(checkpoint, Note(text, (signer.sign(text),)))

    def render(self) -> str:
        return self.note.render()

    def with_signatures(self, *more: NoteSignature) -> SignedCheckpoint:
        return SignedCheckpoint(self.checkpoint, self.note.with_signatures(*more))


@dataclass
class CheckpointVerdict:
    """What one checkpoint proves to one verifier."""

    log_signed: bool = False
    cosigners: list[str] = field(default_factory=list)  # policy names of the witnesses
    problems: list[str] = field(default_factory=list)
    quorum_met: bool = False

    @property
    def trusted(self) -> bool:
        return self.log_signed and self.quorum_met and not self.problems


def log_verifier(public_key: bytes, origin: str) -> VerifierKey:
    """The vkey of a log whose key name is its origin (what this service does)."""
    return VerifierKey(origin, ED25519, public_key)


def check_checkpoint(
    signed: SignedCheckpoint,
    log_keys: Sequence[VerifierKey],
    policy: Policy | None = None,
    *,
    now: int | None = None,
) -> CheckpointVerdict:
    """Check the log's signature and count the cosignatures a policy accepts.

    Signature lines of unknown keys are ignored (as the spec requires); a line that claims
    a known key (name and key ID) but does not verify makes the whole checkpoint untrusted.
    """
    verdict = CheckpointVerdict()
    verdict.problems.extend(
        f"{k.text()} is not an Ed25519 log key" for k in log_keys if k.signature_type != ED25519
    )
    for line in signed.note.signatures:
        _check_log_signature(signed.note.text, line, log_keys, verdict)
        if policy is not None:
            _check_cosignature(signed.note.text, line, policy, verdict, now)
    if not verdict.log_signed and not any("does not verify" in p for p in verdict.problems):
        verdict.problems.append("no signature by the log's key")
    verdict.quorum_met = policy is None or policy.satisfied(set(verdict.cosigners))
    return verdict


def _check_log_signature(
    text: str, line: NoteSignature, log_keys: Sequence[VerifierKey], verdict: CheckpointVerdict
) -> None:
    for key in log_keys:
        if key.signature_type != ED25519 or not key.matches(line):
            continue
        if key.verify(text, line):
            verdict.log_signed = True
        else:
            verdict.problems.append(f"the signature by {line.name} does not verify")


def _check_cosignature(
    text: str, line: NoteSignature, policy: Policy, verdict: CheckpointVerdict, now: int | None
) -> None:
    for name, witness in policy.witnesses.items():
        if not witness.key.matches(line):
            continue
        if not witness.key.verify(text, line):
            verdict.problems.append(f"the cosignature by witness {name} does not verify")
        elif now is not None and cosignature_timestamp(line) > now + COSIGNATURE_FUTURE_SKEW_S:
            verdict.problems.append(f"the cosignature by witness {name} is from the future")
        elif name not in verdict.cosigners:
            verdict.cosigners.append(name)


def describe(verdict: CheckpointVerdict, policy: Policy | None, size: int) -> str:
    """One line saying why a checkpoint is or is not trusted."""
    if verdict.problems:
        return f"the checkpoint at size {size} is not trusted: " + "; ".join(verdict.problems)
    if policy is None or not policy.witnesses:
        return f"the checkpoint at size {size} is signed by the log"
    cosigned = ", ".join(verdict.cosigners) or "no witness"
    if not verdict.quorum_met:
        assert policy is not None
        return (
            f"the checkpoint at size {size} is cosigned by {cosigned}, which does not meet "
            f"the policy's quorum ({policy.describe_quorum()})"
        )
    return f"the checkpoint at size {size} is signed by the log and cosigned by {cosigned}"
