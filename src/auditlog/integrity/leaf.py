"""The leaf of an event: SHA-256(0x00 || RFC 8785 serialization of the event as the API
returns it, without its `leaf_hash`). docs/INTEGRITY.md states the rule for auditors.

RFC 8785 (JCS) fixes key order, string escaping and number formatting, so anyone holding
the JSON the API returned can recompute the leaf in any language. `rfc8785` implements it
exactly but takes ~60 µs an event; the writer hashes every event, so the common case goes
through orjson (~3 µs), which produces the same bytes once numbers are pre-formatted the
JCS way and when no key could sort differently (the two sort orders differ only for
characters from U+E000 up). tests/unit/integrity/test_leaf.py checks the two agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

import orjson
import rfc8785

from auditlog.integrity.proofs import hash_leaf

MAX_SAFE_INTEGER = 2**53 - 1
_SORT_SAFE_BELOW = "\ue000"


class _NeedsReference(Exception):
    """The document has something only the reference implementation should format."""


def _prepare(value: Any) -> Any:
    """Numbers as JCS writes them (IEEE doubles); refuse keys whose order could differ."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not key.isascii() and max(key) >= _SORT_SAFE_BELOW:
                raise _NeedsReference
            out[key] = _prepare(item)
        return out
    if isinstance(value, list):
        return [_prepare(item) for item in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return value
        return orjson.Fragment(rfc8785.dumps(float(value)))
    if isinstance(value, float):
        return orjson.Fragment(rfc8785.dumps(value))
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def _as_doubles(value: Any) -> Any:
    """JSON numbers are doubles to RFC 8785: large integers read back from JSONB become so."""
    if isinstance(value, dict):
        return {key: _as_doubles(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_doubles(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return value if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER else float(value)
    return value


def _plain(value: Any) -> bool:
    """True if orjson's own output for value is already RFC 8785: no floats, no integers a
    double cannot hold, no keys that sort differently in UTF-16. (The common case, checked
    without building anything.)"""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int:
            if -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                continue
            return False
        if kind is dict:
            for key, child in item.items():
                if not key.isascii() and max(key) >= _SORT_SAFE_BELOW:
                    return False
                stack.append(child)
            continue
        if kind is list:
            stack.extend(item)
            continue
        return False
    return True


def canonical_bytes(document: Mapping[str, Any]) -> bytes:
    """RFC 8785 bytes of an event document, `leaf_hash` left out."""
    body = {key: value for key, value in document.items() if key != "leaf_hash"}
    if _plain(body):
        return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    try:
        return orjson.dumps(_prepare(body), option=orjson.OPT_SORT_KEYS)
    except _NeedsReference:
        return reference_canonical_bytes(body)


def reference_canonical_bytes(document: Mapping[str, Any]) -> bytes:
    """The same bytes by the reference implementation only (slow; for checks and rare keys)."""
    body = {key: value for key, value in document.items() if key != "leaf_hash"}
    return rfc8785.dumps(_as_doubles(body))


def leaf_hash(document: Mapping[str, Any]) -> bytes:
    """The Merkle leaf hash of an event document."""
    return hash_leaf(canonical_bytes(document))


def value_bytes(value: Any) -> bytes:
    """RFC 8785 bytes of one JSON value."""
    if type(value) is str or _plain(value):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    try:
        return orjson.dumps(_prepare(value), option=orjson.OPT_SORT_KEYS)
    except _NeedsReference:
        return rfc8785.dumps(_as_doubles(value))


@cache
def _member_name(key: str) -> bytes:
    if not key.isascii():
        raise ValueError(f"a top-level key must be ASCII: {key!r}")
    return orjson.dumps(key) + b":"


def seq_parts(document: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """The canonical bytes of a document's members before and after `seq`.

    The writer serializes an event before it knows its seq (outside the lock that orders
    batches), then `leaf_for_seq` completes the leaf in about a microsecond. Top-level keys
    are ASCII, so code-point order is RFC 8785's UTF-16 order.
    """
    return seq_parts_of({k: value_bytes(v) for k, v in document.items()})


def seq_parts_of(members: Mapping[str, bytes]) -> tuple[bytes, bytes]:
    """`seq_parts` from each member's RFC 8785 bytes (`value_bytes`), so that the writer
    serializes each value once and keeps the bytes for its COPY columns too."""
    keys = sorted(k for k in members if k not in ("seq", "leaf_hash"))
    before = b",".join(_member_name(k) + members[k] for k in keys if k < "seq")
    after = b",".join(_member_name(k) + members[k] for k in keys if k > "seq")
    return b"{" + before + b"}", b"{" + after + b"}"


def leaf_for_seq(before: bytes, after: bytes, seq: int) -> bytes:
    """The leaf hash of the document whose `seq_parts` these are, at position `seq`."""
    head = before[:-1] + b"," if len(before) > 2 else b"{"
    tail = b"," + after[1:] if len(after) > 2 else b"}"
    return hash_leaf(head + b'"seq":' + str(seq).encode() + tail)
