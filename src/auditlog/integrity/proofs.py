"""Check RFC 9162 inclusion and consistency proofs: the Python standard library only.

This module is meant to be copied or imported by anyone who holds a tree head and wants to
check the log without trusting the server: it needs nothing but `hashlib`. Hashes are raw
32-byte values; the API gives them in standard base64 (see `b64decode`).

    from auditlog.integrity import verify_inclusion
    ok = verify_inclusion(leaf_index, tree_size, leaf_hash, inclusion_path, root_hash)
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence

HASH_SIZE = 32


def hash_leaf(data: bytes) -> bytes:
    """RFC 9162 §2.1.1: the hash of a leaf is SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    """RFC 9162 §2.1.1: an interior node is SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def b64decode(value: str) -> bytes:
    """Decode one standard-base64 hash as the API returns it."""
    return base64.b64decode(value, validate=True)


def root_from_inclusion_proof(
    leaf_index: int, tree_size: int, leaf_hash: bytes, path: Sequence[bytes]
) -> bytes:
    """RFC 9162 §2.1.3.2: the root the path leads to; ValueError if the path cannot fit."""
    if not 0 <= leaf_index < tree_size:
        raise ValueError(f"leaf index {leaf_index} is outside a tree of size {tree_size}")
    if len(leaf_hash) != HASH_SIZE or any(len(node) != HASH_SIZE for node in path):
        raise ValueError("every hash must be 32 bytes")
    fn, sn = leaf_index, tree_size - 1
    r = leaf_hash
    for p in path:
        if sn == 0:
            raise ValueError("the path is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = hash_children(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = hash_children(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ValueError("the path is shorter than the tree is deep")
    return r


def verify_inclusion(
    leaf_index: int, tree_size: int, leaf_hash: bytes, path: Sequence[bytes], root_hash: bytes
) -> bool:
    """True if `path` proves the leaf at `leaf_index` is in the tree with `root_hash`."""
    try:
        return root_from_inclusion_proof(leaf_index, tree_size, leaf_hash, path) == root_hash
    except ValueError:
        return False


def verify_consistency(
    first: int, second: int, path: Sequence[bytes], first_root: bytes, second_root: bytes
) -> bool:
    """True if `path` proves the tree of size `second` extends the tree of size `first`.

    RFC 9162 §2.1.4.2, with the trivial cases: equal sizes need an empty path and equal
    roots; the empty tree (size 0) is consistent with every tree.
    """
    if any(len(node) != HASH_SIZE for node in path) or not 0 <= first <= second:
        return False
    if first == second:
        return not path and first_root == second_root
    if first == 0:
        return not path
    roots = _roots_from_consistency_proof(first, second, path, first_root)
    return roots == (first_root, second_root)


def _roots_from_consistency_proof(
    first: int, second: int, path: Sequence[bytes], first_root: bytes
) -> tuple[bytes, bytes] | None:
    """The two roots a consistency path leads to (0 < first < second), or None."""
    if not path:
        return None
    nodes = list(path)
    # If first is an exact power of two, the proof omits the first tree's root: put it back.
    if first & (first - 1) == 0:
        nodes.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = nodes[0]
    for c in nodes[1:]:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            fr = hash_children(c, fr)
            sr = hash_children(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = hash_children(sr, c)
        fn >>= 1
        sn >>= 1
    return (fr, sr) if sn == 0 else None
