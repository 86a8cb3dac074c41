"""The witness's rules (c2sp.org/tlog-witness), answer by answer, with a real state file."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auditlog.integrity.checkpoint import Checkpoint, SignedCheckpoint, check_checkpoint
from auditlog.integrity.merkle import Frontier, consistency_path
from auditlog.integrity.note import COSIGNATURE_V1, NoteSigner
from auditlog.integrity.policy import Policy
from auditlog.integrity.proofs import hash_leaf
from auditlog.services.witness import WitnessService, origin_hash
from auditlog.storage.witness_state import StateFileError, WitnessState
from auditlog.storage.witnesses import add_checkpoint_body

ORIGIN = "log.example/audit"


class History:
    """A log's leaves; checkpoints and consistency proofs of any of its sizes."""

    def __init__(self, signer: NoteSigner, tag: str = ""):
        self.signer = signer
        self.leaves = [hash_leaf(f"{tag}{i}".encode()) for i in range(300)]

    def node(self, level: int, index: int) -> bytes:
        frontier = Frontier()
        for leaf in self.leaves[index << level : (index + 1) << level]:
            frontier.append(leaf)
        return frontier.root()

    def checkpoint(self, size: int) -> str:
        frontier = Frontier()
        for leaf in self.leaves[:size]:
            frontier.append(leaf)
        return SignedCheckpoint.sign(
            Checkpoint(self.signer.name, size, frontier.root()), self.signer
        ).render()

    def body(self, old: int, size: int) -> bytes:
        return add_checkpoint_body(
            old, consistency_path(old, size, self.node), self.checkpoint(size)
        )


@pytest.fixture
def log_signer() -> NoteSigner:
    return NoteSigner(ORIGIN, Ed25519PrivateKey.generate())


@pytest.fixture
def cosigner() -> NoteSigner:
    return NoteSigner("witness.example/w1", Ed25519PrivateKey.generate(), COSIGNATURE_V1)


@pytest.fixture
def witness(tmp_path: Path, log_signer: NoteSigner, cosigner: NoteSigner) -> WitnessService:
    state = WitnessState(tmp_path / "state.json")
    yield WitnessService(cosigner, [log_signer.verifier], state, clock=lambda: 1_800_000_000.0)
    state.close()


class TestAddCheckpoint:
    def test_first_then_consistent_then_same_again(
        self, witness: WitnessService, log_signer: NoteSigner, cosigner: NoteSigner
    ):
        log = History(log_signer)
        first = witness.add_checkpoint(log.body(0, 10))
        assert first.status == 200
        policy = Policy.from_witnesses([cosigner.verifier], 1)
        cosigned = SignedCheckpoint.parse(log.checkpoint(10) + first.body)
        assert check_checkpoint(cosigned, [log_signer.verifier], policy).trusted
        assert witness.add_checkpoint(log.body(10, 257)).status == 200
        assert witness.add_checkpoint(log.body(257, 257)).status == 200

    def test_old_size_mismatch_is_409_with_the_size(
        self, witness: WitnessService, log_signer: NoteSigner
    ):
        log = History(log_signer)
        witness.add_checkpoint(log.body(0, 10))
        reply = witness.add_checkpoint(log.body(3, 20))
        assert (reply.status, reply.body, reply.content_type) == (409, "10\n", "text/x.tlog.size")

    def test_a_fork_of_the_same_size_is_422(self, witness: WitnessService, log_signer: NoteSigner):
        witness.add_checkpoint(History(log_signer).body(0, 10))
        fork = History(log_signer, tag="other")
        assert witness.add_checkpoint(fork.body(0, 10)).status == 409
        assert witness.add_checkpoint(fork.body(10, 10)).status == 422

    def test_a_fork_that_grew_fails_its_proof(
        self, witness: WitnessService, log_signer: NoteSigner
    ):
        witness.add_checkpoint(History(log_signer).body(0, 10))
        reply = witness.add_checkpoint(History(log_signer, tag="other").body(10, 20))
        assert reply.status == 422
        assert "does not verify" in reply.body

    def test_refusals_before_the_state(
        self, witness: WitnessService, log_signer: NoteSigner, tmp_path: Path
    ):
        log = History(log_signer)
        assert witness.add_checkpoint(b"old 0\n").status == 400
        assert witness.add_checkpoint(b"old 01\n\n" + log.checkpoint(1).encode()).status == 400
        assert witness.add_checkpoint(log.body(0, 10).replace(b"old 0", b"old 11")).status == 400
        stranger = History(NoteSigner("other.example/x", Ed25519PrivateKey.generate()))
        assert witness.add_checkpoint(stranger.body(0, 5)).status == 404
        impostor = History(NoteSigner(ORIGIN, Ed25519PrivateKey.generate()))
        assert witness.add_checkpoint(impostor.body(0, 5)).status == 403
        with_proof = add_checkpoint_body(0, [b"\0" * 32], log.checkpoint(5))
        assert witness.add_checkpoint(with_proof).status == 422

    def test_the_state_survives_a_restart(
        self, tmp_path: Path, log_signer: NoteSigner, cosigner: NoteSigner
    ):
        log = History(log_signer)
        state = WitnessState(tmp_path / "w.json")
        WitnessService(cosigner, [log_signer.verifier], state).add_checkpoint(log.body(0, 10))
        with pytest.raises(StateFileError, match="in use"):
            WitnessState(tmp_path / "w.json")
        state.close()
        reopened = WitnessState(tmp_path / "w.json")
        try:
            again = WitnessService(cosigner, [log_signer.verifier], reopened)
            assert again.add_checkpoint(log.body(0, 12)).body == "10\n"
            latest = again.latest(origin_hash(ORIGIN))
            assert latest.status == 200
            assert SignedCheckpoint.parse(latest.body).checkpoint.tree_size == 10
            assert again.latest("0" * 64).status == 404
        finally:
            reopened.close()
