"""Tile paths, widths and bundles as c2sp.org/tlog-tiles spells them, and proofs from tiles."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditlog.integrity import merkle
from auditlog.integrity.merkle import Frontier, consistency_path, inclusion_path
from auditlog.integrity.proofs import hash_leaf, verify_consistency, verify_inclusion
from auditlog.integrity.tiles import (
    WIDTH,
    TilePathError,
    TileRef,
    TileTree,
    available_width,
    bundle,
    encode_index,
    unbundle,
)


class TestPaths:
    @pytest.mark.parametrize(
        ("index", "path"),
        [(0, "000"), (7, "007"), (999, "999"), (1000, "x001/000"), (1234067, "x001/x234/067")],
    )
    def test_index_encoding(self, index: int, path: str):
        assert encode_index(index) == path
        level, _, rest = f"0/{path}".partition("/")
        assert TileRef.parse(level, rest).index == index

    def test_partial_and_entries(self):
        ref = TileRef.parse("2", "x001/234.p/17")
        assert (ref.level, ref.index, ref.width, ref.partial) == (2, 1234, 17, True)
        assert ref.path() == "tile/2/x001/234.p/17"
        entries = TileRef.parse("entries", "005")
        assert entries.is_entries
        assert entries.path() == "tile/entries/005"

    @pytest.mark.parametrize(
        ("level", "rest"),
        [
            ("64", "000"),
            ("01", "000"),
            ("0", "1"),
            ("0", "0000"),
            ("0", "x000/001"),  # a leading zero group
            ("0", "001/002"),  # a non-final part without x
            ("0", "000.p/0"),
            ("0", "000.p/256"),
            ("0", "000.p/07"),
            ("data", "000"),
        ],
    )
    def test_refused(self, level: str, rest: str):
        with pytest.raises(TilePathError):
            TileRef.parse(level, rest)

    def test_the_spec_example_of_70000_leaves(self):
        # "273 full level 0 tiles, one partial level 0 tile of width 112, one full level 1
        # tile, one partial level 1 tile of width 17, and one partial level 2 tile of width 1"
        size = 70_000
        assert [available_width(0, n, size) for n in (0, 272, 273, 274)] == [256, 256, 112, 0]
        assert [available_width(1, n, size) for n in (0, 1, 2)] == [256, 17, 0]
        assert available_width(2, 0, size) == 1
        assert available_width(3, 0, size) == 0
        assert available_width(1, 0, 256) == 1


class TestBundles:
    def test_round_trip(self):
        entries = [b"", b"a", b"x" * 65535]
        assert unbundle(bundle(entries)) == entries

    def test_too_large(self):
        with pytest.raises(ValueError, match="uint16"):
            bundle([b"x" * 65536])

    def test_truncated(self):
        with pytest.raises(ValueError, match="ends inside"):
            unbundle(bundle([b"abc"])[:-1])


def _served(size: int) -> tuple[dict[tuple[int, int], bytes], list[bytes]]:
    """The stored strata of a tree of `size` leaves, as the writer stores them."""
    leaves = [hash_leaf(str(i).encode()) for i in range(size)]
    frontier = Frontier()
    nodes = {(0, i): leaf for i, leaf in enumerate(leaves)}
    for leaf in leaves:
        nodes.update({(lv, ix): h for lv, ix, h in frontier.append(leaf) if lv % 8 == 0})
    return nodes, leaves


def _fetcher(nodes: dict[tuple[int, int], bytes], fetched: list[TileRef]):
    def fetch(ref: TileRef) -> bytes:
        fetched.append(ref)
        level = ref.tree_level
        return b"".join(nodes[(level, ref.first + i)] for i in range(ref.width))

    return fetch


class TestProofsFromTiles:
    @settings(max_examples=30, deadline=None)
    @given(st.integers(1, 70_000), st.data())
    def test_proofs_from_tiles_verify(self, size: int, data: st.DataObject):
        nodes, leaves = _served(size)
        fetched: list[TileRef] = []
        tree = TileTree(size, _fetcher(nodes, fetched))
        root = merkle.root(size, tree.node)
        index = data.draw(st.integers(0, size - 1))
        assert verify_inclusion(
            index, size, leaves[index], inclusion_path(index, size, tree.node), root
        )
        first = data.draw(st.integers(1, size))
        old_root = merkle.root(first, TileTree(first, _fetcher(nodes, [])).node)
        assert verify_consistency(
            first, size, consistency_path(first, size, tree.node), old_root, root
        )
        assert all(ref.width == available_width(ref.level or 0, ref.index, size) for ref in fetched)

    def test_a_wrong_tile_length_is_refused(self):
        tree = TileTree(10, lambda ref: b"\0" * 31)
        with pytest.raises(ValueError, match="bytes"):
            tree.node(0, 0)

    def test_each_tile_is_fetched_once(self):
        nodes, _ = _served(WIDTH * 3 + 5)
        fetched: list[TileRef] = []
        tree = TileTree(WIDTH * 3 + 5, _fetcher(nodes, fetched))
        merkle.root(tree.tree_size, tree.node)
        merkle.root(tree.tree_size, tree.node)
        assert len(fetched) == len(set(fetched)) == tree.fetched
        assert hashlib.sha256(b"").digest() == merkle.EMPTY_ROOT
