"""The integrity chain: leaves, the Merkle tree, signed tree heads, and proof checking.

`verify_inclusion` and `verify_consistency` need only the Python standard library.
"""

from auditlog.integrity.proofs import (
    b64decode,
    hash_children,
    hash_leaf,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)

__all__ = [
    "b64decode",
    "hash_children",
    "hash_leaf",
    "root_from_inclusion_proof",
    "verify_consistency",
    "verify_inclusion",
]
