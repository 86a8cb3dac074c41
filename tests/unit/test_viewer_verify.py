"""The viewer's Verify computes what auditlog.integrity computes, byte for byte: its own
module (viewer/src/verify.js, run by Node.js with the npm packages scripts/setup.sh
installed) against leaves, inclusion proofs and signed heads made here in Python.

The browser tests verify a few real events end to end; this covers the corners: keys that
sort differently in UTF-16, numbers in every form JSON allows, every leaf of every tree up
to 64 leaves, and trees far past 2^32 leaves (no 32-bit arithmetic in the page).
"""

from __future__ import annotations

import base64
import json
import random
import shutil
import subprocess
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auditlog.integrity import hash_leaf, merkle, root_from_inclusion_proof
from auditlog.integrity.heads import HeadSigner
from auditlog.integrity.leaf import leaf_hash
from tests.helpers import ROOT

VERIFY_JS = ROOT / "viewer" / "src" / "verify.js"
NODE = shutil.which("node")

# Reads the vectors on stdin, answers what verify.js makes of them on stdout.
SCRIPT = """
import * as v from %(module)s;
const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const input = JSON.parse(Buffer.concat(chunks).toString('utf8'));
const hex = (bytes) => Buffer.from(bytes).toString('hex');
const out = {leaves: [], roots: [], heads: []};
for (const text of input.events) out.leaves.push(hex(await v.leafHash(JSON.parse(text))));
for (const [index, size, leaf, path] of input.proofs) {
  try {
    out.roots.push(hex(await v.rootFromInclusionProof(
      index, size, v.b64decode(leaf, 'leaf'), path.map((p) => v.b64decode(p, 'path')))));
  } catch (error) {
    out.roots.push(`refused: ${error.message}`);
  }
}
for (const head of input.heads) out.heads.push(hex(v.signedHeadBody(head)));
process.stdout.write(JSON.stringify(out));
"""

pytestmark = pytest.mark.skipif(NODE is None, reason="needs Node.js (scripts/setup.sh checks it)")


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def run_verify_js(vectors: dict[str, Any]) -> dict[str, list[str]]:
    assert (ROOT / "viewer" / "node_modules" / "canonicalize").is_dir(), "run scripts/setup.sh"
    script = SCRIPT % {"module": json.dumps(VERIFY_JS.as_uri())}
    done = subprocess.run(
        [NODE or "node", "--input-type=module", "-e", script],
        input=orjson.dumps(vectors),
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


def documents() -> list[dict[str, Any]]:
    """Events as the API returns them, with content that tests the canonical form."""
    base = {
        "id": "7d0c1d1e-6c5b-4a57-9e0f-3a8d6b2d9c11",
        "seq": 41,
        "type": "customer.account.created",
        "service": "accounts",
        "occurred_at": "2026-11-28T09:59:58.123000Z",
        "received_at": "2026-11-28T10:00:01.482113Z",
        "publisher": None,
        "actor": {"id": "u-17", "type": "user"},
        "subject": None,
        "action": None,
        "outcome": "unknown",
        "context": None,
        "data": None,
        "leaf_hash": "ignored: never part of the leaf",
    }
    contents: list[Any] = [
        {},
        {"plan": "pro", "amount": 1999},
        {"\ue000": 1, "\uffff": 2, "z": 3, "é": 4, "😀": 5, "\U0001f600a": 6, "A": 7, "": 8},
        {"numbers": [0, -0.0, 0.1, 1.5e-7, 1e-7, 123456789.125, 2**53 - 1, -(2**53 - 1)]},
        {"big": [1e21, 1e20, 1.7976931348623157e308, 5e-324, 100000000000000000000.0]},
        {"escapes": '"\\/\b\f\n\r\t\u0000\u001f\u007f\u2028\u2029</script>'},
        {"__proto__": {"polluted": True}, "constructor": "x", "toJSON": "not a function"},
        {"nested": [[[{"b": [], "a": {}}]]], "bools": [True, False, None]},
        {"rtl": "\u202e\u200b e\u0301", "astral": "𝄞𝕏", "cjk": "監査ログ"},
        {"long": "A" * 100_000},
    ]
    return [{**base, "seq": i, "data": content} for i, content in enumerate(contents)]


class TestLeaves:
    """The leaf the page computes from the JSON the API returns is the server's."""

    def test_every_document_hashes_the_same(self):
        docs = documents()
        # What the browser receives: the API's JSON bytes (orjson, as the API writes them).
        texts = [orjson.dumps(doc).decode() for doc in docs]
        answer = run_verify_js({"events": texts, "proofs": [], "heads": []})
        assert answer["leaves"] == [leaf_hash(orjson.loads(text)).hex() for text in texts]


def tree(size: int, rng: random.Random) -> tuple[list[bytes], merkle.NodeFn]:
    leaves = [hash_leaf(rng.randbytes(8)) for _ in range(size)]

    def node(level: int, index: int) -> bytes:
        return merkle.fold(leaves[index << level : (index + 1) << level])

    return leaves, node


def path_length(index: int, size: int) -> int:
    """How many hashes an inclusion path of leaf `index` in a tree of `size` has."""
    for length in range(65):
        try:
            root_from_inclusion_proof(index, size, bytes(32), [bytes(32)] * length)
        except ValueError:
            continue
        return length
    raise AssertionError((index, size))


class TestInclusionProofs:
    """The page folds a path to the root RFC 9162 gives, and refuses a path that cannot fit."""

    def test_every_leaf_of_every_small_tree(self):
        rng = random.Random(20261207)
        proofs, expected = [], []
        for size in range(1, 65):
            leaves, node = tree(size, rng)
            root = merkle.root(size, node)
            for index in range(size):
                path = merkle.inclusion_path(index, size, node)
                proofs.append([index, size, b64(leaves[index]), [b64(p) for p in path]])
                expected.append(root.hex())
        answer = run_verify_js({"events": [], "proofs": proofs, "heads": []})
        assert answer["roots"] == expected

    def test_trees_past_32_bits(self):
        rng = random.Random(7)
        proofs, expected = [], []
        for size, index in [(2**32 + 5, 2**32 + 4), (2**40 + 12345, 2**39 + 77), (2**53 - 1, 3)]:
            leaf = rng.randbytes(32)
            path = [rng.randbytes(32) for _ in range(path_length(index, size))]
            proofs.append([index, size, b64(leaf), [b64(p) for p in path]])
            expected.append(root_from_inclusion_proof(index, size, leaf, path).hex())
        answer = run_verify_js({"events": [], "proofs": proofs, "heads": []})
        assert answer["roots"] == expected

    def test_a_path_that_cannot_fit_is_refused(self):
        rng = random.Random(3)
        _, node = tree(20, rng)
        path = [b64(p) for p in merkle.inclusion_path(5, 20, node)]
        leaf = b64(hash_leaf(b"x"))
        cases = [
            [5, 20, leaf, path[:-1]],  # too short
            [5, 20, leaf, [*path, path[0]]],  # too long
            [20, 20, leaf, path],  # index outside the tree
            [5, 20, leaf, [b64(b"short"), *path[1:]]],  # a node that is not 32 bytes
        ]
        answer = run_verify_js({"events": [], "proofs": cases, "heads": []})
        assert all(root.startswith("refused: ") for root in answer["roots"]), answer["roots"]


class TestSignedHeads:
    """The page checks the signature over the very bytes the writer signed."""

    def test_the_signed_body_is_the_same(self):
        signer = HeadSigner(Ed25519PrivateKey.generate())
        heads = [
            signer.sign(size, bytes([size % 256]) * 32, datetime(2026, 11, 28, 22, 45, 36, us, UTC))
            for size, us in [(1, 0), (1350, 638775), (2**40, 999999)]
        ]
        answer = run_verify_js({"events": [], "proofs": [], "heads": [h.as_dict() for h in heads]})
        assert answer["heads"] == [h.signed_body().hex() for h in heads]
