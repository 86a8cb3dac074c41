"""Publishing checkpoints: sign one per interval when the log grew, and have witnesses
cosign it (c2sp.org/tlog-witness).

One round (`CheckpointPublisher.run_once`), run every second or so by the worker
(tasks/checkpoints.py), under a lock that makes it the only round running anywhere:

1. Stopped? A witness of the policy refused the latest checkpoint: nothing more is signed
   (`resume=True`, from `auditlog publish --resume`, tries again).
2. The log grew and the latest checkpoint is at least an interval old: sign the latest
   signed tree head's size and root as a checkpoint and record it.
3. Submit the latest checkpoint, with a consistency proof from the size each witness last
   cosigned, to every witness that has not cosigned it yet. A cosignature is checked and
   recorded. A witness that says it saw another size (409) gets one more try from that size.
   A witness that finds the checkpoint inconsistent with what it saw (422, or a 409 naming
   a larger tree than ours) refuses it: recorded, and publication stops until an operator
   looks. Ingest never waits for any of this.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from auditlog.integrity.checkpoint import Checkpoint, SignedCheckpoint
from auditlog.integrity.merkle import consistency_path, needed_nodes, root
from auditlog.integrity.note import Note, NoteFormatError, NoteSignature, NoteSigner
from auditlog.integrity.policy import PolicyWitness
from auditlog.integrity.proofs import verify_consistency
from auditlog.storage.checkpoints import PublicationLog, Publications, StoredCheckpoint
from auditlog.storage.tree import TreeInconsistent
from auditlog.storage.witnesses import WitnessAnswer

log = structlog.get_logger("auditlog.checkpoints")

_SIZE_ANSWER = re.compile(r"(0|[1-9][0-9]{0,18})\n?")
MAX_RECORDED_ANSWER = 2000


class Witnesses(Protocol):
    """Where checkpoints are submitted (storage/witnesses.py: WitnessClient)."""

    def add_checkpoint(
        self, url: str, old_size: int, proof: list[bytes], checkpoint: str
    ) -> WitnessAnswer: ...


@dataclass
class RoundReport:
    """What one round did; the worker turns it into metrics."""

    ran: bool = False
    published: int | None = None  # size of a checkpoint signed in this round
    latest: int | None = None  # size of the latest checkpoint after the round
    cosigned: list[str] = field(default_factory=list)  # witness names
    refused: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (witness, reason)
    stopped: bool = False


class _Refused(Exception):
    def __init__(self, status: int, answer: str):
        self.status = status
        self.answer = answer
        super().__init__(f"{status}: {answer}")


class _Failed(Exception):
    def __init__(self, reason: str, detail: str):
        self.reason = reason
        self.detail = detail
        super().__init__(detail)


class CheckpointPublisher:
    def __init__(
        self,
        publications: Publications,
        signer: NoteSigner,
        witnesses: list[PolicyWitness],
        client: Witnesses,
        *,
        interval_s: float,
        clock: Callable[[], float] = time.time,
    ):
        missing = [w.name for w in witnesses if not w.url]
        if missing:
            raise ValueError(f"witnesses without a URL to submit to: {', '.join(missing)}")
        self._publications = publications
        self._signer = signer
        self._witnesses = witnesses
        self._client = client
        self._interval_s = interval_s
        self._clock = clock

    @property
    def origin(self) -> str:
        return self._signer.name

    def close(self) -> None:
        self._publications.close()

    def run_once(self, *, resume: bool = False) -> RoundReport:
        report = RoundReport()
        with self._publications.round() as pub:
            if pub is None:
                return report  # another process runs a round right now
            report.ran = True
            self._round(pub, report, resume=resume)
        return report

    def _round(self, pub: PublicationLog, report: RoundReport, *, resume: bool) -> None:
        found = pub.latest_checkpoint()
        latest, age_s = found if found is not None else (None, 0.0)
        refused = self._refusers(pub, latest)
        if refused and not resume:
            report.stopped = True
            report.latest = latest.tree_size if latest else None
            return
        head = pub.latest_head()
        if head is None:
            return
        if latest is not None and head.tree_size < latest.tree_size:
            report.stopped = True
            report.latest = latest.tree_size
            log.error(
                "the log is smaller than a checkpoint it published: it was rolled back or "
                "cut; not publishing",
                checkpoint_size=latest.tree_size,
                tree_size=head.tree_size,
            )
            return
        grew = latest is None or head.tree_size > latest.tree_size
        if grew and (latest is None or resume or age_s >= self._interval_s):
            checkpoint = Checkpoint(self.origin, head.tree_size, head.root_hash)
            signed = SignedCheckpoint.sign(checkpoint, self._signer)
            latest = pub.record_checkpoint(head.tree_size, signed.render())
            report.published = latest.tree_size
            log.info("checkpoint published", tree_size=latest.tree_size, origin=self.origin)
        if latest is None:
            return
        report.latest = latest.tree_size
        self._submit_all(pub, latest, report, skip=set() if resume else refused)

    def _refusers(self, pub: PublicationLog, latest: StoredCheckpoint | None) -> set[str]:
        """The witnesses of the policy that refused the latest checkpoint (verifier keys)."""
        if latest is None:
            return set()
        configured = {w.key.text() for w in self._witnesses}
        return configured & set(pub.refusals(latest.tree_size))

    def _submit_all(
        self, pub: PublicationLog, latest: StoredCheckpoint, report: RoundReport, skip: set[str]
    ) -> None:
        note = Note.parse(latest.render())
        pending = [
            w
            for w in self._witnesses
            if w.key.text() not in skip and not any(w.key.matches(s) for s in note.signatures)
        ]
        if not pending:
            return
        cosigned_sizes = pub.cosigned_sizes([w.key.text() for w in pending])
        for witness in pending:
            vkey = witness.key.text()
            try:
                line = self._submit(pub, witness, latest, cosigned_sizes.get(vkey, 0))
            except _Refused as refusal:
                pub.record_refusal(
                    latest.tree_size, vkey, refusal.status, refusal.answer[:MAX_RECORDED_ANSWER]
                )
                report.refused.append(witness.name)
                report.stopped = True
                log.error(
                    "a witness refused the checkpoint as inconsistent with what it saw "
                    "before: a fork of the log, or a log rolled back; publication stops",
                    witness=witness.name,
                    tree_size=latest.tree_size,
                    status=refusal.status,
                    answer=refusal.answer[:200],
                )
                continue
            except _Failed as failure:
                report.failed.append((witness.name, failure.reason))
                log.warning(
                    "a witness did not cosign the checkpoint; trying again next round",
                    witness=witness.name,
                    tree_size=latest.tree_size,
                    reason=failure.reason,
                    detail=failure.detail[:200],
                )
                continue
            pub.record_cosignature(latest.tree_size, vkey, line.line())
            report.cosigned.append(witness.name)
            log.info("checkpoint cosigned", witness=witness.name, tree_size=latest.tree_size)

    def _submit(
        self, pub: PublicationLog, witness: PolicyWitness, latest: StoredCheckpoint, old: int
    ) -> NoteSignature:
        assert witness.url is not None
        size = latest.tree_size
        checkpoint = SignedCheckpoint.parse(latest.note).checkpoint
        for attempt in range(2):
            if old > size:
                raise _Refused(409, f"the witness has seen size {old}; this checkpoint is {size}")
            proof = self._proof(pub, old, size, checkpoint.root_hash)
            answer = self._client.add_checkpoint(witness.url, old, proof, latest.note)
            if answer.status == 200:
                return self._cosignature(witness, latest, answer.body)
            if answer.status == 409:
                seen = _SIZE_ANSWER.fullmatch(answer.body)
                if seen is None:
                    raise _Failed("malformed_409", f"409 without a tree size: {answer.body!r}")
                if attempt == 0 and int(seen.group(1)) != old and int(seen.group(1)) <= size:
                    old = int(seen.group(1))  # it saw another checkpoint of ours: prove from it
                    continue
                raise _Refused(409, answer.body)
            if answer.status == 422:
                raise _Refused(422, answer.body)
            reason = "no_answer" if answer.status == 0 else f"http_{answer.status}"
            raise _Failed(reason, answer.body)
        raise _Failed("conflict", "the witness's size changed twice during one submission")

    def _proof(self, pub: PublicationLog, old: int, size: int, root_hash: bytes) -> list[bytes]:
        """A consistency proof from old to size, checked against the checkpoint's root
        before a witness sees it (a damaged tree must not look like a fork)."""

        def algorithm(node: Callable[[int, int], bytes]) -> tuple[list[bytes], bytes, bytes]:
            return consistency_path(old, size, node), root(old, node), root(size, node)

        try:
            nodes = pub.nodes(needed_nodes(algorithm))
        except TreeInconsistent as exc:
            raise _Failed("log_damaged", str(exc)) from None
        proof, old_root, new_root = algorithm(lambda level, index: nodes[(level, index)])
        if new_root != root_hash or not verify_consistency(old, size, proof, old_root, new_root):
            raise _Failed("log_damaged", f"the stored tree gives no valid proof {old}→{size}")
        return proof

    def _cosignature(
        self, witness: PolicyWitness, latest: StoredCheckpoint, body: str
    ) -> NoteSignature:
        text = Note.parse(latest.note).text
        lines = [line for line in body.split("\n") if line]
        for raw in lines:
            try:
                signature = NoteSignature.parse(raw)
            except NoteFormatError:
                continue
            if witness.key.verify(text, signature):
                return signature
        raise _Failed("bad_cosignature", f"no valid cosignature by {witness.name}: {body[:200]!r}")
