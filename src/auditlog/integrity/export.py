"""The export file: a verifiable piece of the log, one JSON object a line.

    {"auditlog_export": 1, "start": a, "end": b, "prefix": ["<base64>", ...]}
    {...event with seq a, exactly as the API returns it...}
    ...
    {"tree_size": n, "root_hash": ..., "timestamp": ..., "signature": ...}   (after seq n-1)
    ...

It holds every event with a <= seq < b in seq order, each signed tree head with
a < tree_size <= b right after the event that completes it, and `prefix`: the hashes of the
complete subtrees of the first a leaves, so that the piece can be checked on its own.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any, Protocol

import orjson

from auditlog.integrity.heads import TreeHead, b64
from auditlog.integrity.merkle import frontier_keys
from auditlog.integrity.verify import Item, interleave

FORMAT_VERSION = 1
HASH_BYTES = 32


class ExportFormatError(Exception):
    """The file is not an export this version can read."""


class ExportSource(Protocol):
    def events(self, start: int = 0, end: int | None = None) -> Iterator[dict[str, Any]]: ...
    def heads(self, start: int = 0, end: int | None = None) -> Iterator[TreeHead]: ...
    def frontier(self, size: int) -> list[bytes]: ...
    def seq_range(self, since: Any, until: Any) -> tuple[int, int] | None: ...
    def head_at_or_after(self, size: int) -> TreeHead | None: ...


def write_export(
    source: ExportSource,
    out: IO[bytes],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> int:
    """Write the export; return how many events it holds.

    With since/until, the piece runs from the first event with occurred_at in the range to
    the end of the batch holding the last one: events committed in between belong to the
    piece whatever their occurred_at, or it could not be checked.
    """
    start, end = 0, None
    if since is not None or until is not None:
        found = source.seq_range(since, until)
        if found is None:
            start = end = 0
        else:
            head = source.head_at_or_after(found[1] + 1)
            start, end = found[0], (head.tree_size if head else found[1] + 1)
    prefix = source.frontier(start) if start else []
    header = {
        "auditlog_export": FORMAT_VERSION,
        "start": start,
        "end": end,
        "prefix": [b64(h) for h in prefix],
    }
    out.write(orjson.dumps(header) + b"\n")
    if end == 0:
        return 0
    written = 0
    for item in interleave(source.events(start, end), source.heads(start, end)):
        if isinstance(item, TreeHead):
            out.write(orjson.dumps(item.as_dict()) + b"\n")
        else:
            out.write(orjson.dumps(item) + b"\n")
            written += 1
    return written


@dataclass(frozen=True)
class ExportPiece:
    """What an export file holds: where it starts and ends, and its events and heads."""

    start: int
    end: int | None  # None: the whole log as it was when exported
    prefix: list[bytes]
    items: Iterator[Item]


def read_export(lines: Iterable[bytes]) -> ExportPiece:
    """The header of an export and the stream of its events and heads (read lazily)."""
    it = iter(lines)
    try:
        header = orjson.loads(next(it))
        if not isinstance(header, dict) or header.get("auditlog_export") != FORMAT_VERSION:
            raise ExportFormatError("the first line is not an auditlog export header")
        start = _count(header["start"], "start")
        end = None if header.get("end") is None else _count(header["end"], "end")
        prefix = [base64.b64decode(h, validate=True) for h in header["prefix"]]
    except StopIteration:
        raise ExportFormatError("the file is empty") from None
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise ExportFormatError(f"bad header: {exc}") from None
    if end is not None and end < start:
        raise ExportFormatError(f"bad header: end {end} is before start {start}")
    if len(prefix) != len(frontier_keys(start)) or any(len(h) != HASH_BYTES for h in prefix):
        raise ExportFormatError(
            f"bad header: a piece starting at seq {start} needs {len(frontier_keys(start))} "
            f"prefix hashes of {HASH_BYTES} bytes"
        )

    def items() -> Iterator[Item]:
        for number, line in enumerate(it, start=2):
            if not line.strip():
                continue
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ExportFormatError(f"line {number} is not JSON: {exc}") from None
            if not isinstance(value, dict):
                raise ExportFormatError(f"line {number} is not a JSON object")
            if "tree_size" in value and "signature" in value:
                try:
                    yield TreeHead.from_dict(value)
                except ValueError as exc:
                    raise ExportFormatError(f"line {number}: {exc}") from None
            else:
                yield value

    return ExportPiece(start, end, prefix, items())


def _count(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer")
    return value
