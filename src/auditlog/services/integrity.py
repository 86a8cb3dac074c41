"""Integrity answers: signed tree heads, inclusion and consistency proofs, the public key."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from auditlog.errors import InvalidQuery, LogDamaged, NotFound
from auditlog.integrity import verify_consistency, verify_inclusion
from auditlog.integrity.heads import TreeHead, b64
from auditlog.integrity.merkle import NodeFn, consistency_path, inclusion_path, needed_nodes
from auditlog.integrity.proofs import b64decode
from auditlog.services.queries import Params, QueryService, single_values
from auditlog.storage.tree import TreeInconsistent, TreeReader

_SIZE = re.compile(r"[0-9]{1,18}")
DAMAGE_HINT = "; the stored log was changed or damaged: `auditlog verify` says where"


def _size(values: dict[str, str], name: str, *, minimum: int = 1) -> int | None:
    raw = values.get(name)
    if raw is None:
        return None
    if not _SIZE.fullmatch(raw) or int(raw) < minimum:
        raise InvalidQuery(name, f"must be an integer of at least {minimum}")
    return int(raw)


class IntegrityService:
    """What an auditor needs to check the log holding nothing but the public key."""

    def __init__(self, tree: TreeReader, queries: QueryService, public_key: bytes):
        self._tree = tree
        self._queries = queries
        self._public_key = public_key

    def public_key(self) -> dict[str, str]:
        return {"public_key": b64(self._public_key), "algorithm": "Ed25519"}

    async def tree_head(self, params: Params) -> dict[str, Any]:
        values = single_values(params, ("size",))
        return (await self._head(_size(values, "size"))).as_dict()

    async def inclusion_proof(self, event_id: str, params: Params) -> dict[str, Any]:
        values = single_values(params, ("tree_size",))
        size = _size(values, "tree_size")
        event = await self._queries.get(event_id)
        head = await self._head(size)
        index = event["seq"]
        if index >= head.tree_size:
            raise InvalidQuery(
                "tree_size",
                f"the event (seq {index}) is not in the tree of size {head.tree_size}; "
                "ask against a later tree head",
            )
        path = await self._compute(lambda node: inclusion_path(index, head.tree_size, node))
        leaf = b64decode(event["leaf_hash"])
        # A proof that fails its own check is never handed out: the auditor would only
        # learn that the log is damaged, without being told so.
        if not verify_inclusion(index, head.tree_size, leaf, path, head.root_hash):
            raise LogDamaged(
                f"the inclusion proof of seq {index} in the tree of size {head.tree_size} "
                "does not verify against its signed head" + DAMAGE_HINT
            )
        return {
            "leaf_index": index,
            "tree_size": head.tree_size,
            "leaf_hash": event["leaf_hash"],
            "inclusion_path": [b64(node) for node in path],
        }

    async def consistency(self, params: Params) -> dict[str, Any]:
        values = single_values(params, ("first", "second"))
        first, second = _size(values, "first"), _size(values, "second")
        if first is None or second is None:
            raise InvalidQuery("first" if first is None else "second", "is required")
        if first > second:
            raise InvalidQuery("first", "must not be greater than second")
        old, new = await self._head(first), await self._head(second)
        path = await self._compute(lambda node: consistency_path(first, second, node))
        if not verify_consistency(first, second, path, old.root_hash, new.root_hash):
            raise LogDamaged(
                f"the consistency proof from size {first} to {second} does not verify "
                "against their signed heads" + DAMAGE_HINT
            )
        return {"first": first, "second": second, "consistency_path": [b64(n) for n in path]}

    async def _head(self, size: int | None) -> TreeHead:
        head = await (self._tree.latest_head() if size is None else self._tree.head(size))
        if head is None:
            if size is None:
                raise NotFound("the log is empty: no tree head has been signed yet")
            raise NotFound(f"no signed tree head has size {size} (heads are recorded per batch)")
        return head

    async def _compute(self, algorithm: Callable[[NodeFn], list[bytes]]) -> list[bytes]:
        """Fetch the O(log n) nodes an algorithm needs in one round trip, then run it."""
        try:
            nodes = await self._tree.nodes(needed_nodes(algorithm))
        except TreeInconsistent as exc:
            raise LogDamaged(f"{exc}{DAMAGE_HINT}") from None
        return algorithm(lambda level, index: nodes[(level, index)])
