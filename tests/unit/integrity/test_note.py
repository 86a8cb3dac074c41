"""Signed notes, checkpoints and verifier keys against the C2SP specifications' examples."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auditlog.integrity.checkpoint import (
    Checkpoint,
    CheckpointFormatError,
    SignedCheckpoint,
    check_checkpoint,
    log_verifier,
)
from auditlog.integrity.heads import public_bytes
from auditlog.integrity.note import (
    COSIGNATURE_V1,
    ED25519,
    Note,
    NoteFormatError,
    NoteSignature,
    NoteSigner,
    VerifierKey,
    cosignature_timestamp,
)
from auditlog.integrity.policy import Policy

# c2sp.org/signed-note, "Verifier keys", Example.
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2"
    "ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)
# A cosignature/v1 verifier key and a cosignature with its timestamp, from the test suite of
# github.com/transparency-dev/formats (note/note_cosigv1_test.go).
COSIGNER_VKEY = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"
COSIGNATURE = (
    "ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOworDcFiEB"
    "YJXORmnFBOBA=="
)
ROOT = base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")


class TestSpecExamples:
    """The examples of the specifications verify, and come out of our code unchanged."""

    def test_the_signed_note_example_verifies(self):
        key = VerifierKey.parse(SPEC_VKEY)
        note = Note.parse(SPEC_NOTE)
        assert note.text == "This is an example message.\n"
        assert key.signature_type == ED25519
        assert key.text() == SPEC_VKEY
        assert key.verify(note.text, note.signatures[0])
        assert note.render() == SPEC_NOTE

    def test_a_changed_text_does_not_verify(self):
        key = VerifierKey.parse(SPEC_VKEY)
        note = Note.parse(SPEC_NOTE)
        assert not key.verify("This is an example message!\n", note.signatures[0])

    def test_the_cosignature_key_id_is_computed_with_type_4(self):
        key = VerifierKey.parse(COSIGNER_VKEY)
        assert key.signature_type == COSIGNATURE_V1
        assert key.key_id.hex() == "da77ade7"

    def test_a_cosignature_carries_its_timestamp(self):
        raw = base64.b64decode(COSIGNATURE)
        assert cosignature_timestamp(NoteSignature("w", raw[:4], raw[4:])) == 1727964367

    def test_the_checkpoint_example_parses(self):
        text = (
            "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
        )
        checkpoint = Checkpoint.parse(text)
        assert (checkpoint.origin, checkpoint.tree_size) == (
            "example.com/behind-the-sofa",
            20852163,
        )
        assert checkpoint.root_hash == ROOT
        assert checkpoint.text() == text


class TestMalformed:
    @pytest.mark.parametrize(
        "text",
        [
            "no blank line\n— a AAAAAAA=\n",
            "text\n\n— a AAAAAAA=",  # no final newline
            "text\n\n- a AAAAAAA=\n",  # not an em dash
            "text\n\n— a not-base64!\n",
            "text\n\n— a+b AAAAAAA=\n",  # a plus in the key name
            "text\x07\n\n— a AAAAAAA=\n",  # a control character
            "text\n\n— a AAA=\n",  # shorter than a key ID
        ],
    )
    def test_notes(self, text: str):
        with pytest.raises(NoteFormatError):
            Note.parse(text)

    @pytest.mark.parametrize(
        "text",
        [
            "origin\n12\n",
            "origin\n012\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "origin\n-1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "origin\n12\nCsUYapGG\n",
            "origin\n12\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=",
            "origin\n12\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n",
        ],
    )
    def test_checkpoints(self, text: str):
        with pytest.raises(CheckpointFormatError):
            Checkpoint.parse(text)

    @pytest.mark.parametrize(
        "text",
        [
            "example.com/foo+530d903b+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",  # wrong ID
            "example.com/foo+530d903a",
            "example.com/foo+530d903a+!!!",
            "example.com/foo+530d903a+CekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",  # type 9
        ],
    )
    def test_vkeys(self, text: str):
        with pytest.raises(NoteFormatError):
            VerifierKey.parse(text)


def _keys(name: str, kind: int = ED25519) -> NoteSigner:
    return NoteSigner(name, Ed25519PrivateKey.generate(), kind)


class TestCheckpoints:
    """A checkpoint is trusted with the log's signature and the cosignatures a policy asks."""

    def setup_method(self) -> None:
        self.log = _keys("log.example/a")
        self.w1 = _keys("w1.example", COSIGNATURE_V1)
        self.w2 = _keys("w2.example", COSIGNATURE_V1)
        self.policy = Policy.from_witnesses([self.w1.verifier, self.w2.verifier], 1)
        self.signed = SignedCheckpoint.sign(Checkpoint("log.example/a", 7, ROOT), self.log)

    def cosign(self, signer: NoteSigner, at: int = 1_700_000_000) -> SignedCheckpoint:
        return self.signed.with_signatures(signer.sign(self.signed.note.text, timestamp=at))

    def test_signed_by_the_log_without_a_policy(self):
        verdict = check_checkpoint(self.signed, [self.log.verifier])
        assert verdict.trusted

    def test_round_trip(self):
        signed = self.cosign(self.w1)
        again = SignedCheckpoint.parse(signed.render())
        assert again == signed

    def test_quorum(self):
        assert not check_checkpoint(self.signed, [self.log.verifier], self.policy).trusted
        verdict = check_checkpoint(self.cosign(self.w2), [self.log.verifier], self.policy)
        assert verdict.trusted
        assert verdict.cosigners == ["w2.example"]

    def test_all_of_two(self):
        policy = Policy.from_witnesses([self.w1.verifier, self.w2.verifier], None)
        one = self.cosign(self.w1)
        assert not check_checkpoint(one, [self.log.verifier], policy).trusted
        both = one.with_signatures(self.w2.sign(self.signed.note.text, timestamp=5))
        assert check_checkpoint(both, [self.log.verifier], policy).trusted

    def test_a_cosignature_over_another_checkpoint_does_not_count(self):
        other = Checkpoint("log.example/a", 8, ROOT).text()
        forged = self.signed.with_signatures(self.w1.sign(other, timestamp=5))
        verdict = check_checkpoint(forged, [self.log.verifier], self.policy)
        assert not verdict.trusted
        assert "does not verify" in verdict.problems[0]

    def test_a_log_signature_under_another_key_is_ignored_then_missing(self):
        impostor = _keys("log.example/a")
        signed = SignedCheckpoint.sign(Checkpoint("log.example/a", 7, ROOT), impostor)
        verdict = check_checkpoint(signed, [self.log.verifier])
        assert not verdict.trusted
        assert verdict.problems == ["no signature by the log's key"]

    def test_a_cosignature_from_the_future_does_not_count(self):
        signed = self.cosign(self.w1, at=2_000_000_000)
        verdict = check_checkpoint(signed, [self.log.verifier], self.policy, now=1_700_000_000)
        assert not verdict.trusted

    def test_a_witness_key_does_not_verify_the_log_and_the_log_key_no_cosignature(self):
        as_log = check_checkpoint(self.cosign(self.w1), [self.w1.verifier])
        assert not as_log.log_signed

    def test_log_verifier_is_the_origin_named_key(self):
        raw = self.log.verifier.public_key
        assert log_verifier(raw, "log.example/a") == self.log.verifier
        assert public_bytes(Ed25519PrivateKey.generate().public_key()) != raw
