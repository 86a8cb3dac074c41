"""The publisher's round against a real witness (the service, in process): what it signs,
when, what it submits, and what each answer does. Storage is an in-memory stand-in with
the methods of storage/checkpoints.py's PublicationLog."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auditlog.integrity.heads import TreeHead
from auditlog.integrity.merkle import Frontier, NodeKey
from auditlog.integrity.note import COSIGNATURE_V1, NoteSigner
from auditlog.integrity.policy import Policy, PolicyWitness
from auditlog.integrity.proofs import hash_leaf
from auditlog.services.checkpoints import CheckpointPublisher
from auditlog.services.witness import WitnessService
from auditlog.storage.checkpoints import StoredCheckpoint
from auditlog.storage.witness_state import WitnessState
from auditlog.storage.witnesses import WitnessAnswer, add_checkpoint_body

ORIGIN = "log.test/audit"
NOW = datetime(2026, 12, 1, tzinfo=UTC)


class MemoryLog:
    """A log's leaves, heads and checkpoint tables, in memory."""

    def __init__(self, tag: str = "a"):
        self.tag = tag
        self.leaves: list[bytes] = []
        self.checkpoints: list[StoredCheckpoint] = []
        self.cosignatures: dict[tuple[int, str], str] = {}
        self.refused: dict[tuple[int, str], int] = {}
        self.age_s = 1000.0

    def grow(self, count: int) -> None:
        self.leaves += [
            hash_leaf(f"{self.tag}{len(self.leaves) + i}".encode()) for i in range(count)
        ]

    def root(self, size: int) -> bytes:
        frontier = Frontier()
        for leaf in self.leaves[:size]:
            frontier.append(leaf)
        return frontier.root()

    # --- PublicationLog's methods -----------------------------------------------------------
    def latest_checkpoint(self) -> tuple[StoredCheckpoint, float] | None:
        if not self.checkpoints:
            return None
        latest = self.checkpoints[-1]
        lines = [v for (size, _), v in self.cosignatures.items() if size == latest.tree_size]
        return StoredCheckpoint(latest.tree_size, latest.note, NOW, lines), self.age_s

    def latest_head(self) -> TreeHead | None:
        size = len(self.leaves)
        return TreeHead(size, self.root(size), NOW) if size else None

    def record_checkpoint(self, tree_size: int, note: str) -> StoredCheckpoint:
        self.checkpoints.append(StoredCheckpoint(tree_size, note, NOW))
        self.age_s = 0.0
        return self.checkpoints[-1]

    def cosigned_sizes(self, witnesses: Any) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for size, witness in self.cosignatures:
            sizes[witness] = max(size, sizes.get(witness, 0))
        return sizes

    def refusals(self, tree_size: int) -> dict[str, int]:
        return {w: status for (size, w), status in self.refused.items() if size == tree_size}

    def record_cosignature(self, tree_size: int, witness: str, line: str) -> None:
        self.cosignatures[(tree_size, witness)] = line

    def record_refusal(self, tree_size: int, witness: str, status: int, answer: str) -> None:
        self.refused[(tree_size, witness)] = status

    def nodes(self, keys: Any) -> dict[NodeKey, bytes]:
        found = {}
        for level, index in keys:
            frontier = Frontier()
            for leaf in self.leaves[index << level : (index + 1) << level]:
                frontier.append(leaf)
            found[(level, index)] = frontier.root()
        return found


class MemoryPublications:
    def __init__(self, log: MemoryLog):
        self.log = log

    @contextmanager
    def round(self) -> Iterator[MemoryLog]:
        yield self.log

    def close(self) -> None:
        pass


class InProcessWitness:
    """The witness service answering as over HTTP; `down` makes it not answer."""

    def __init__(self, service: WitnessService):
        self.service = service
        self.down = False
        self.requests: list[tuple[int, int]] = []  # (old size, status)

    def add_checkpoint(
        self, url: str, old_size: int, proof: list[bytes], checkpoint: str
    ) -> WitnessAnswer:
        if self.down:
            return WitnessAnswer(0, "no answer: connection refused")
        reply = self.service.add_checkpoint(add_checkpoint_body(old_size, proof, checkpoint))
        self.requests.append((old_size, reply.status))
        return WitnessAnswer(reply.status, reply.body, reply.content_type)


@pytest.fixture
def log_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def witness(tmp_path: Path, log_key: Ed25519PrivateKey) -> Iterator[InProcessWitness]:
    signer = NoteSigner("w.test", Ed25519PrivateKey.generate(), COSIGNATURE_V1)
    state = WitnessState(tmp_path / "w.json")
    yield InProcessWitness(WitnessService(signer, [NoteSigner(ORIGIN, log_key).verifier], state))
    state.close()


def publisher(
    log: MemoryLog, key: Ed25519PrivateKey, witness: InProcessWitness
) -> CheckpointPublisher:
    verifier = witness.service.verifier_key
    policy = Policy.parse(f"witness w {verifier.text()} http://w.test\nquorum w\n")
    witnesses: list[PolicyWitness] = list(policy.witnesses.values())
    return CheckpointPublisher(
        MemoryPublications(log),  # type: ignore[arg-type]
        NoteSigner(ORIGIN, key),
        witnesses,
        witness,
        interval_s=5,
    )


class TestRounds:
    def test_publishes_when_grown_and_due_and_submits_with_a_proof(
        self, log_key: Ed25519PrivateKey, witness: InProcessWitness
    ):
        log = MemoryLog()
        log.grow(10)
        publish = publisher(log, log_key, witness)
        first = publish.run_once()
        assert (first.published, first.cosigned, first.stopped) == (10, ["w"], False)
        log.grow(300)
        log.age_s = 4.9  # the last checkpoint is not an interval old yet
        assert publish.run_once().published is None
        log.age_s = 5.0
        second = publish.run_once()
        assert (second.published, second.cosigned) == (310, ["w"])
        assert witness.requests == [(0, 200), (10, 200)]
        assert publish.run_once().published is None  # not grown: nothing to sign or submit

    def test_a_witness_that_was_down_gets_the_latest_when_back(
        self, log_key: Ed25519PrivateKey, witness: InProcessWitness
    ):
        log = MemoryLog()
        log.grow(5)
        publish = publisher(log, log_key, witness)
        witness.down = True
        down = publish.run_once()
        assert (down.published, down.failed, down.stopped) == (5, [("w", "no_answer")], False)
        witness.down = False
        assert publish.run_once().cosigned == ["w"]

    def test_a_witness_ahead_of_what_was_stored_is_caught_up(
        self, log_key: Ed25519PrivateKey, witness: InProcessWitness
    ):
        """The witness cosigned a checkpoint whose cosignature was never stored (a crash):
        its 409 names that size, and the next submission proves from it."""
        log = MemoryLog()
        log.grow(20)
        publish = publisher(log, log_key, witness)
        publish.run_once()
        log.cosignatures.clear()  # as if the process died before storing it
        log.grow(30)
        log.age_s = 10
        report = publish.run_once()
        assert (report.published, report.cosigned, report.stopped) == (50, ["w"], False)
        assert witness.requests[-2:] == [(0, 409), (20, 200)]

    def test_a_fork_is_refused_and_publication_stops_until_resumed(
        self, log_key: Ed25519PrivateKey, witness: InProcessWitness
    ):
        real, fork = MemoryLog("real"), MemoryLog("fork")
        real.grow(40)
        fork.grow(40)
        publisher(real, log_key, witness).run_once()
        publish = publisher(fork, log_key, witness)
        refused = publish.run_once()
        assert (refused.published, refused.refused, refused.stopped) == (40, ["w"], True)
        assert witness.requests[-2:] == [(0, 409), (40, 422)]
        assert list(fork.refused.values()) == [422]
        fork.grow(5)
        fork.age_s = 100
        stopped = publish.run_once()
        assert (stopped.published, stopped.stopped) == (None, True)
        resumed = publish.run_once(resume=True)
        assert (resumed.published, resumed.refused) == (45, ["w"])

    def test_a_log_smaller_than_its_checkpoint_stops(
        self, log_key: Ed25519PrivateKey, witness: InProcessWitness
    ):
        log = MemoryLog()
        log.grow(30)
        publish = publisher(log, log_key, witness)
        publish.run_once()
        del log.leaves[20:]  # restored from an older backup
        report = publish.run_once()
        assert (report.published, report.stopped) == (None, True)

    def test_a_witness_that_saw_a_larger_tree_refuses(
        self, log_key: Ed25519PrivateKey, witness: InProcessWitness
    ):
        log = MemoryLog()
        log.grow(30)
        publisher(log, log_key, witness).run_once()
        rolled_back = MemoryLog()
        rolled_back.grow(20)
        report = publisher(rolled_back, log_key, witness).run_once()
        assert (report.refused, report.stopped) == (["w"], True)
        assert witness.requests[-1] == (0, 409)
