"""The RFC 9162 Merkle tree over the log, kept as stored complete subtrees.

A node is named (level, index): the hash of leaves [index·2^level, (index+1)·2^level).
Level 0 are the leaf hashes. Complete nodes are stored at every STRATUM-th level (8, 16,
…), as tlog and Trillian store tiles: any other node is the fold of at most 2^(STRATUM-1)
stored nodes of the stratum below it, so the root of any size, an inclusion proof or a
consistency proof reads O(log n) bounded ranges of stored nodes, and the tree costs about
one stored row per 2^STRATUM events. The algorithms here take a `node(level, index)`
function and never touch storage; `needed_nodes` runs one of them to learn which nodes to
fetch first, and `base_range` says which stored nodes make up any node.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

from auditlog.integrity.proofs import hash_children

NodeKey = tuple[int, int]
NodeFn = Callable[[int, int], bytes]
EMPTY_ROOT = hashlib.sha256(b"").digest()
STRATUM = 8


def is_stored(level: int) -> bool:
    """Whether nodes of this level are stored (level 0 is the events' leaf hashes)."""
    return level % STRATUM == 0


def base_range(level: int, index: int) -> tuple[int, int, int]:
    """The stored nodes (base level, first index, end index) whose fold is node (level, index)."""
    base = level - level % STRATUM
    span = 1 << (level - base)
    return base, index * span, (index + 1) * span


def fold(hashes: list[bytes]) -> bytes:
    """The root of a complete subtree from its 2^k nodes at one level, left to right."""
    while len(hashes) > 1:
        hashes = [hash_children(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
    return hashes[0]


def _largest_power_of_two_below(n: int) -> int:
    """k with k < n <= 2k (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def subtree_hash(start: int, end: int, node: NodeFn) -> bytes:
    """MTH(D[start:end]) for a range whose pieces are aligned, as every range in RFC 9162's
    recursions is."""
    size = end - start
    if size <= 0:
        return EMPTY_ROOT
    if size & (size - 1) == 0 and start % size == 0:
        level = size.bit_length() - 1
        return node(level, start >> level)
    k = _largest_power_of_two_below(size)
    return hash_children(subtree_hash(start, start + k, node), subtree_hash(start + k, end, node))


def root(size: int, node: NodeFn) -> bytes:
    return subtree_hash(0, size, node)


def inclusion_path(leaf_index: int, size: int, node: NodeFn) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(m, D[n]), deepest sibling first."""
    if not 0 <= leaf_index < size:
        raise ValueError(f"leaf {leaf_index} is not in a tree of size {size}")

    def path(m: int, start: int, end: int) -> list[bytes]:
        n = end - start
        if n == 1:
            return []
        k = _largest_power_of_two_below(n)
        if m < k:
            return [*path(m, start, start + k), subtree_hash(start + k, end, node)]
        return [*path(m - k, start + k, end), subtree_hash(start, start + k, node)]

    return path(leaf_index, 0, size)


def consistency_path(first: int, second: int, node: NodeFn) -> list[bytes]:
    """RFC 9162 §2.1.4.1 PROOF(m, D[n]); empty when the sizes are equal or first is 0."""
    if not 0 <= first <= second:
        raise ValueError(f"no consistency proof from size {first} to size {second}")
    if first in (0, second):
        return []

    def subproof(m: int, start: int, end: int, whole: bool) -> list[bytes]:
        n = end - start
        if m == n:
            return [] if whole else [subtree_hash(start, end, node)]
        k = _largest_power_of_two_below(n)
        if m <= k:
            return [*subproof(m, start, start + k, whole), subtree_hash(start + k, end, node)]
        return [*subproof(m - k, start + k, end, False), subtree_hash(start, start + k, node)]

    return subproof(first, 0, second, True)


def needed_nodes(run: Callable[[NodeFn], object]) -> set[NodeKey]:
    """The nodes an algorithm reads (its control flow never depends on hash values)."""
    keys: set[NodeKey] = set()

    def record(level: int, index: int) -> bytes:
        keys.add((level, index))
        return EMPTY_ROOT

    run(record)
    return keys


def frontier_keys(size: int) -> list[NodeKey]:
    """The complete subtrees a tree of `size` leaves decomposes into, largest first."""
    keys = []
    start = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            keys.append((level, start >> level))
            start += 1 << level
    return keys


class Frontier:
    """The right edge of the tree: enough to append leaves and compute the root."""

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = ()):
        self.size = size
        self._stack = list(zip((k[0] for k in frontier_keys(size)), hashes, strict=True))

    def append(self, leaf_hash: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf; return the (level, index, hash) of every node it completes, level ≥ 1
        (the caller stores those of the levels that are stored)."""
        self.size += 1
        self._stack.append((0, leaf_hash))
        completed = []
        while len(self._stack) >= 2 and self._stack[-1][0] == self._stack[-2][0]:
            level, right = self._stack.pop()
            _, left = self._stack.pop()
            parent = hash_children(left, right)
            index = (self.size >> (level + 1)) - 1
            self._stack.append((level + 1, parent))
            completed.append((level + 1, index, parent))
        return completed

    def hashes(self) -> list[bytes]:
        return [h for _, h in self._stack]

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        result = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            result = hash_children(left, result)
        return result
