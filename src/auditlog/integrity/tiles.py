"""C2SP tlog-tiles (c2sp.org/tlog-tiles): the tree served as tiles of 256 hashes.

Tile (L, N) holds the hashes of nodes (8·L, N·256 + i) for i in 0…255: at level 0 the leaf
hashes, above them the roots of complete subtrees of 256^L leaves. Those are exactly the
strata the service stores (integrity/merkle.py: levels 8, 16, …), so a tile is one range
read. A tile is *partial* (`.p/W`, 1 ≤ W ≤ 255 hashes) at the right edge of the tree.
Entry bundles (`tile/entries/N`) hold the leaf inputs of the same 256 leaves, each prefixed
by its length as a big-endian uint16: for this log, an event's RFC 8785 bytes.

`TileTree` goes the other way: it computes any node of a tree of a given size from tiles
fetched by a function, so a client holding only a checkpoint can compute inclusion and
consistency proofs (`auditlog verify --checkpoint`).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass

from auditlog.integrity.merkle import STRATUM, base_range, fold

HEIGHT = STRATUM  # 8: a tile covers 8 levels of the tree
WIDTH = 1 << HEIGHT  # 256 hashes
HASH_BYTES = 32
MAX_LEVEL = 63
MAX_ENTRY_BYTES = 0xFFFF  # a bundle's length prefix is a uint16
ENTRIES = "entries"

_INDEX_PART = re.compile(r"x[0-9]{3}")
_LAST_PART = re.compile(r"[0-9]{3}")
_LEVEL = re.compile(r"0|[1-9][0-9]?")
_WIDTH = re.compile(r"[1-9][0-9]{0,2}")


class TilePathError(ValueError):
    """Not a tile path this log serves (the message says why)."""


@dataclass(frozen=True)
class TileRef:
    """A hash tile (level 0…63) or an entry bundle (level None), full or partial."""

    level: int | None
    index: int
    width: int = WIDTH

    @property
    def partial(self) -> bool:
        return self.width < WIDTH

    @property
    def is_entries(self) -> bool:
        return self.level is None

    @property
    def first(self) -> int:
        """Index of its first hash (or entry) within its level."""
        return self.index * WIDTH

    @property
    def tree_level(self) -> int:
        """The tree level its hashes are nodes of (entries: the leaves)."""
        return 0 if self.level is None else self.level * HEIGHT

    def path(self) -> str:
        """tile/<L>/<N>[.p/<W>] or tile/entries/<N>[.p/<W>]."""
        level = ENTRIES if self.level is None else str(self.level)
        suffix = f".p/{self.width}" if self.partial else ""
        return f"tile/{level}/{encode_index(self.index)}{suffix}"

    @classmethod
    def parse(cls, level: str, index_path: str) -> TileRef:
        """The tile named by `<L>` (or `entries`) and `<N>[.p/<W>]` of its path."""
        if level == ENTRIES:
            tile_level: int | None = None
        elif _LEVEL.fullmatch(level) and int(level) <= MAX_LEVEL:
            tile_level = int(level)
        else:
            raise TilePathError(f"the level {level[:20]!r} is not 0 to {MAX_LEVEL} or 'entries'")
        parts = index_path.split("/")
        width = WIDTH
        if len(parts) >= 2 and parts[-2].endswith(".p"):
            if not _WIDTH.fullmatch(parts[-1]) or not 1 <= int(parts[-1]) < WIDTH:
                raise TilePathError(f"a partial tile's width is 1 to {WIDTH - 1}")
            width = int(parts[-1])
            parts = [*parts[:-2], parts[-2][: -len(".p")]]
        return cls(tile_level, decode_index(parts), width)


def encode_index(index: int) -> str:
    """1234067 -> x001/x234/067: groups of three digits, all but the last prefixed by x."""
    groups = [f"{index % 1000:03d}"]
    index //= 1000
    while index:
        groups.append(f"x{index % 1000:03d}")
        index //= 1000
    return "/".join(reversed(groups))


def decode_index(parts: list[str]) -> int:
    if not parts or not _LAST_PART.fullmatch(parts[-1]):
        raise TilePathError("a tile index ends in three digits, e.g. 001 or x001/234")
    if any(not _INDEX_PART.fullmatch(p) for p in parts[:-1]):
        raise TilePathError("every part of a tile index but the last is x and three digits")
    if len(parts) > 1 and parts[0] == "x000":
        raise TilePathError("a tile index has no leading x000 group")
    value = 0
    for part in parts:
        value = value * 1000 + int(part.removeprefix("x"))
    return value


def available_width(level: int, index: int, tree_size: int) -> int:
    """How many hashes of tile (level, index) a tree of tree_size leaves has (0 to 256)."""
    nodes = tree_size >> (HEIGHT * level)  # complete nodes at tree level 8·level
    return max(0, min(WIDTH, nodes - index * WIDTH))


def tile_for(level: int, node_index: int, tree_size: int) -> TileRef:
    """The smallest tile of tree_size that holds node (8·level, node_index)."""
    index = node_index >> HEIGHT
    width = available_width(level, index, tree_size)
    if width <= node_index % WIDTH:
        raise ValueError(f"node ({level * HEIGHT}, {node_index}) is not in a tree of {tree_size}")
    return TileRef(level, index, width)


def bundle(entries: list[bytes]) -> bytes:
    """An entry bundle: each entry prefixed by its length (uint16, big-endian)."""
    out = bytearray()
    for entry in entries:
        if len(entry) > MAX_ENTRY_BYTES:
            raise ValueError(f"an entry of {len(entry)} bytes does not fit a bundle's uint16")
        out += struct.pack(">H", len(entry)) + entry
    return bytes(out)


def unbundle(data: bytes) -> list[bytes]:
    entries = []
    at = 0
    while at < len(data):
        if at + 2 > len(data):
            raise ValueError("an entry bundle ends inside a length prefix")
        (size,) = struct.unpack_from(">H", data, at)
        if at + 2 + size > len(data):
            raise ValueError("an entry bundle ends inside an entry")
        entries.append(data[at + 2 : at + 2 + size])
        at += 2 + size
    return entries


class TileTree:
    """The nodes of a tree of `tree_size` leaves, computed from its tiles.

    `fetch(ref)` returns a tile's bytes; each tile is fetched once. Whatever the tiles say is
    unverified until a root computed from them matches a signed checkpoint's.
    """

    def __init__(self, tree_size: int, fetch: Callable[[TileRef], bytes]):
        self.tree_size = tree_size
        self._fetch = fetch
        self._tiles: dict[TileRef, bytes] = {}

    @property
    def fetched(self) -> int:
        return len(self._tiles)

    def tile(self, ref: TileRef) -> bytes:
        data = self._tiles.get(ref)
        if data is None:
            data = self._fetch(ref)
            if len(data) != ref.width * HASH_BYTES:
                raise ValueError(
                    f"{ref.path()} has {len(data)} bytes, not {ref.width * HASH_BYTES}"
                )
            self._tiles[ref] = data
        return data

    def node(self, level: int, index: int) -> bytes:
        """The hash of the complete subtree (level, index), folded from one tile's hashes."""
        base, lo, hi = base_range(level, index)
        ref = tile_for(base // HEIGHT, hi - 1, self.tree_size)
        data = self.tile(ref)
        start = (lo % WIDTH) * HASH_BYTES
        return fold(
            [data[at : at + HASH_BYTES] for at in range(start, start + (hi - lo) * HASH_BYTES, 32)]
        )
