"""C2SP tlog-policy files: the example of the specification, and the rules it states."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auditlog.integrity.note import COSIGNATURE_V1, ED25519, NoteSigner
from auditlog.integrity.policy import Policy, PolicyError


def vkey(name: str, kind: int = COSIGNATURE_V1) -> str:
    return NoteSigner(name, Ed25519PrivateKey.generate(), kind).verifier.text()


def spec_example() -> str:
    witnesses = "\n".join(f"witness {n} {vkey(n)}" for n in ("X1", "X2", "X3", "Y1", "Y2", "Y3"))
    return f"""# the example of c2sp.org/tlog-policy
log {vkey("log.example", ED25519)} https://log.example/

{witnesses}
group X-witnesses 2 X1 X2 X3
group Y-witnesses any Y1 Y2 Y3
\tgroup X-and-Y all X-witnesses Y-witnesses
quorum X-and-Y
"""


class TestSpecExample:
    def test_two_of_x_and_one_of_y(self):
        policy = Policy.parse(spec_example())
        assert policy.logs[0].url == "https://log.example/"
        assert policy.satisfied({"X1", "X3", "Y2"})
        assert not policy.satisfied({"X1", "Y2"})
        assert not policy.satisfied({"X1", "X2", "X3"})
        assert policy.describe_quorum() == "2 of X-witnesses, Y-witnesses"

    def test_quorum_none(self):
        assert Policy.parse("quorum none\n").satisfied(set())

    def test_a_witness_url(self):
        policy = Policy.parse(f"witness w {vkey('w')} http://127.0.0.1:1/\nquorum w\n")
        assert policy.witnesses["w"].url == "http://127.0.0.1:1/"
        assert policy.satisfied({"w"})
        assert not policy.satisfied(set())


class TestRules:
    @pytest.mark.parametrize(
        ("text", "why"),
        [
            ("log x\nquorum none", "not a verifier key"),
            ("", "no quorum line"),
            ("quorum w", "not defined on an earlier line"),
            ("quorum none\nquorum none", "exactly one quorum"),
            ("group g 1 w\nquorum g", "not defined on an earlier line"),
            ("frobnicate\nquorum none", "not a policy line"),
            ("quorum none\x01", "control characters"),
        ],
    )
    def test_refused(self, text: str, why: str):
        with pytest.raises(PolicyError, match=why):
            Policy.parse(text)

    def test_a_witness_key_must_be_a_cosignature_key(self):
        with pytest.raises(PolicyError, match="type 0x04"):
            Policy.parse(f"witness w {vkey('w', ED25519)}\nquorum w\n")

    def test_thresholds(self):
        a, b = vkey("a"), vkey("b")
        base = f"witness a {a}\nwitness b {b}\n"
        with pytest.raises(PolicyError, match="threshold"):
            Policy.parse(base + "group g 3 a b\nquorum g\n")
        with pytest.raises(PolicyError, match="twice"):
            Policy.parse(base + "group g 1 a a\nquorum g\n")
        with pytest.raises(PolicyError, match="listed twice"):
            Policy.parse(base + f"witness c {a}\nquorum a\n")

    def test_from_witnesses(self):
        keys = [NoteSigner(n, Ed25519PrivateKey.generate(), COSIGNATURE_V1).verifier for n in "ab"]
        assert Policy.from_witnesses(keys, None).describe_quorum() == "2 of a, b"
        assert Policy.from_witnesses(keys, 1).satisfied({"b"})
        with pytest.raises(PolicyError):
            Policy.from_witnesses(keys, 3)
        with pytest.raises(PolicyError):
            Policy.from_witnesses([], 1)
