"""The log as C2SP tlog-tiles: the latest checkpoint, hash tiles and entry bundles.

A tile is served from what is committed (the latest signed tree head): a full tile never
changes, so it may be cached for good; a partial one (`.p/W`) is served while the tile has
at least W hashes and is cached briefly (the spec lets a log drop it once the full tile
exists). Entry bundles hold the events' leaf inputs, their RFC 8785 bytes; they carry
content, so they are read with a key whatever the setting for hash tiles.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from auditlog.errors import LogDamaged, MalformedRequest, NotFound
from auditlog.integrity.leaf import canonical_bytes
from auditlog.integrity.proofs import b64decode, hash_leaf
from auditlog.integrity.tiles import (
    HEIGHT,
    MAX_ENTRY_BYTES,
    WIDTH,
    TilePathError,
    TileRef,
    available_width,
    bundle,
)
from auditlog.services.integrity import DAMAGE_HINT
from auditlog.storage.checkpoints import CheckpointReader
from auditlog.storage.tree import TreeInconsistent, TreeReader

# Cache lifetimes: a full tile or bundle is immutable; a partial one may be replaced by
# its full tile; the checkpoint changes every publication interval.
FULL_MAX_AGE_S = 365 * 24 * 3600
PARTIAL_MAX_AGE_S = 60
CHECKPOINT_MAX_AGE_S = 2


@dataclass(frozen=True)
class TileAnswer:
    body: bytes
    full: bool  # immutable: cache for good


class TileService:
    """What /v1/log/* answers, from the stored tree and the published checkpoints."""

    def __init__(self, tree: TreeReader, checkpoints: CheckpointReader):
        self._tree = tree
        self._checkpoints = checkpoints

    async def checkpoint(self) -> str:
        """The latest published checkpoint, with every cosignature it received."""
        latest = await self._checkpoints.latest()
        if latest is None:
            raise NotFound(
                "no checkpoint has been published yet: the worker publishes one within "
                "AUDITLOG_CHECKPOINT_INTERVAL_S of the first batch"
            )
        return latest.render()

    async def hash_tile(self, level: str, index_path: str) -> TileAnswer:
        ref = _parse(level, index_path)
        if ref.level is None:
            raise MalformedRequest("entry bundles are at tile/entries/<N>")
        tree_level = ref.level * HEIGHT
        try:
            size, hashes = await self._tree.tile_hashes(
                tree_level, ref.first, ref.first + ref.width
            )
        except TreeInconsistent as exc:
            raise LogDamaged(f"{exc}{DAMAGE_HINT}") from None
        _check_width(ref, available_width(ref.level, ref.index, size), size)
        return TileAnswer(b"".join(hashes), full=not ref.partial)

    async def entry_bundle(self, index_path: str) -> TileAnswer:
        ref = _parse("entries", index_path)
        try:
            size, events = await self._tree.entries(ref.first, ref.first + ref.width)
        except TreeInconsistent as exc:
            raise LogDamaged(f"{exc}{DAMAGE_HINT}") from None
        _check_width(ref, available_width(0, ref.index, size), size)
        # Re-serializing and hashing 256 events takes ~13 ms of CPU (far more for large
        # ones): in a thread, so that the event loop goes on serving others meanwhile.
        return TileAnswer(await asyncio.to_thread(_bundle, events), full=not ref.partial)


def _bundle(events: list[dict[str, Any]]) -> bytes:
    """The entry bundle of these events, each checked against its recorded leaf hash."""
    entries = []
    for event in events:
        entry = canonical_bytes(event)
        if hash_leaf(entry) != b64decode(event["leaf_hash"]):
            raise LogDamaged(
                f"seq {event['seq']} does not match its recorded leaf hash{DAMAGE_HINT}"
            )
        if len(entry) > MAX_ENTRY_BYTES:
            # TODO(scale): tlog-tiles prefixes entries with a uint16; events are up to
            # AUDITLOG_MAX_EVENT_BYTES. Serve such bundles at another URL with a longer
            # prefix if the spec does not grow one (its own TODO asks).
            raise NotFound(
                f"this bundle holds seq {event['seq']}, whose leaf input is {len(entry)} "
                f"bytes: more than the {MAX_ENTRY_BYTES} a tlog-tiles entry can carry. "
                f"Read it from GET /v1/events/{event['id']} (its leaf input is the RFC "
                "8785 form of that answer without leaf_hash)"
            )
        entries.append(entry)
    return bundle(entries)


def _parse(level: str, index_path: str) -> TileRef:
    try:
        return TileRef.parse(level, index_path)
    except TilePathError as exc:
        raise MalformedRequest(f"not a tile path: {exc}") from None


def _check_width(ref: TileRef, available: int, size: int) -> None:
    if available >= ref.width:
        return
    if available == 0:
        raise NotFound(f"{ref.path()} does not exist in the tree of size {size}")
    raise NotFound(
        f"{ref.path()} is not there yet: in the tree of size {size} this tile has "
        f"{available} of {WIDTH} hashes ({TileRef(ref.level, ref.index, available).path()})"
    )
