"""The Merkle tree against published RFC 6962 / RFC 9162 test vectors, and by property.

Known answers: the eight reference leaves, their roots, and the inclusion and consistency
proofs come from the Certificate Transparency test suite, as republished in
github.com/transparency-dev/merkle, proof/verify_test.go (Apache-2.0). Its inclusion vectors
count leaves from 1; here leaf indexes count from 0.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from auditlog.integrity import (
    hash_children,
    hash_leaf,
    merkle,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)

LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
ROOTS = [
    bytes.fromhex(h)
    for h in (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
EMPTY_ROOT = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


def h(*hexes: str) -> list[bytes]:
    return [bytes.fromhex(x) for x in hexes]


INCLUSION = [  # (leaf index, tree size, path)
    (
        0,
        8,
        h(
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
    ),
    (
        5,
        8,
        h(
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
    (2, 3, h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")),
    (
        1,
        5,
        h(
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
    ),
]
CONSISTENCY = [  # (first, second, path)
    (
        1,
        8,
        h(
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
    ),
    (
        6,
        8,
        h(
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
    (
        2,
        5,
        h(
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
    ),
    (
        6,
        7,
        h(
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
]


class Tree:
    """A tree built with Frontier, its completed nodes kept in a dict like the database."""

    def __init__(self, leaf_hashes: list[bytes]):
        self.nodes: dict[tuple[int, int], bytes] = {}
        frontier = merkle.Frontier()
        self.roots = [merkle.EMPTY_ROOT]
        for i, leaf in enumerate(leaf_hashes):
            self.nodes[(0, i)] = leaf
            for level, index, node in frontier.append(leaf):
                assert (level, index) not in self.nodes
                self.nodes[(level, index)] = node
            self.roots.append(frontier.root())
        self.frontier = frontier

    def node(self, level: int, index: int) -> bytes:
        return self.nodes[(level, index)]


REFERENCE = Tree([hash_leaf(leaf) for leaf in LEAVES])


class TestKnownAnswers:
    def test_roots(self):
        assert REFERENCE.roots[0] == EMPTY_ROOT
        assert REFERENCE.roots[1:] == ROOTS
        for size in range(1, 9):
            assert merkle.root(size, REFERENCE.node) == ROOTS[size - 1]

    def test_inclusion_paths(self):
        for index, size, path in INCLUSION:
            assert merkle.inclusion_path(index, size, REFERENCE.node) == path
            assert verify_inclusion(index, size, hash_leaf(LEAVES[index]), path, ROOTS[size - 1])

    def test_consistency_paths(self):
        for first, second, path in CONSISTENCY:
            assert merkle.consistency_path(first, second, REFERENCE.node) == path
            assert verify_consistency(first, second, path, ROOTS[first - 1], ROOTS[second - 1])

    def test_corrupted_inclusion_proofs_fail(self):
        for index, size, path in INCLUSION:
            leaf, root = hash_leaf(LEAVES[index]), ROOTS[size - 1]
            assert not verify_inclusion(index + 1, size, leaf, path, root)
            assert not verify_inclusion(index, size * 2, leaf, path, root)
            assert not verify_inclusion(index, size, hash_leaf(b"x"), path, root)
            assert not verify_inclusion(index, size, leaf, [*path, root], root)
            assert not verify_inclusion(index, size, leaf, path[:-1], root)
            for i in range(len(path)):
                flipped = [*path]
                flipped[i] = bytes([path[i][0] ^ 8]) + path[i][1:]
                assert not verify_inclusion(index, size, leaf, flipped, root)

    def test_corrupted_consistency_proofs_fail(self):
        for first, second, path in CONSISTENCY:
            r1, r2 = ROOTS[first - 1], ROOTS[second - 1]
            assert not verify_consistency(first, second, path, r2, r1)
            assert not verify_consistency(first, second, [], r1, r2)
            assert not verify_consistency(first, second, path[:-1], r1, r2)
            assert not verify_consistency(first, second, [*path, r1], r1, r2)
            assert not verify_consistency(first + 1, second, path, r1, r2)
            for i in range(len(path)):
                flipped = [*path]
                flipped[i] = bytes([path[i][0] ^ 16]) + path[i][1:]
                assert not verify_consistency(first, second, flipped, r1, r2)

    def test_trivial_cases(self):
        assert verify_consistency(0, 5, [], EMPTY_ROOT, ROOTS[4])
        assert verify_consistency(3, 3, [], ROOTS[2], ROOTS[2])
        assert not verify_consistency(3, 3, [], ROOTS[2], ROOTS[3])
        assert not verify_consistency(4, 3, [], ROOTS[3], ROOTS[2])
        assert verify_inclusion(0, 1, ROOTS[0], [], ROOTS[0])
        assert not verify_inclusion(0, 0, ROOTS[0], [], ROOTS[0])

    def test_interior_node_prefix(self):
        left, right = hash_leaf(b"a"), hash_leaf(b"b")
        assert merkle.root(2, Tree([left, right]).node) == hash_children(left, right)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=300), st.data())
def test_every_inclusion_proof_verifies(size: int, data: st.DataObject):
    tree = Tree([hash_leaf(i.to_bytes(4, "big")) for i in range(size)])
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    path = merkle.inclusion_path(index, size, tree.node)
    leaf = tree.nodes[(0, index)]
    assert verify_inclusion(index, size, leaf, path, tree.roots[size])
    assert root_from_inclusion_proof(index, size, leaf, path) == tree.roots[size]
    assert len(path) <= size.bit_length()
    if size > 1:
        assert not verify_inclusion((index + 1) % size, size, leaf, path, tree.roots[size])


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=300), st.data())
def test_every_consistency_proof_verifies(second: int, data: st.DataObject):
    tree = Tree([hash_leaf(i.to_bytes(4, "big")) for i in range(second)])
    first = data.draw(st.integers(min_value=1, max_value=second))
    path = merkle.consistency_path(first, second, tree.node)
    assert verify_consistency(first, second, path, tree.roots[first], tree.roots[second])
    if first < second:
        other = hash_leaf(b"forged")
        assert not verify_consistency(first, second, path, other, tree.roots[second])


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=200), st.integers(min_value=1, max_value=50))
def test_frontier_resumes_from_stored_nodes(start: int, more: int):
    """A writer that starts from the stored frontier of size `start` builds the same tree."""
    leaves = [hash_leaf(i.to_bytes(4, "big")) for i in range(start + more)]
    whole = Tree(leaves)
    prefix = Tree(leaves[:start])
    resumed = merkle.Frontier(start, [prefix.node(*k) for k in merkle.frontier_keys(start)])
    for leaf in leaves[start:]:
        for level, index, node in resumed.append(leaf):
            assert whole.nodes[(level, index)] == node
    assert resumed.root() == whole.roots[-1]


def test_needed_nodes_are_logarithmic():
    keys = merkle.needed_nodes(lambda node: merkle.inclusion_path(123_456, 10_000_000, node))
    assert 0 < len(keys) <= 2 * (10_000_000).bit_length()
    keys = merkle.needed_nodes(lambda node: merkle.consistency_path(777, 10_000_000, node))
    assert 0 < len(keys) <= 2 * (10_000_000).bit_length()
