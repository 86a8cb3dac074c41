"""Conditional GETs: whether an If-None-Match names the answer's ETag."""

from __future__ import annotations

from collections.abc import Sequence


def matches(if_none_match: Sequence[str] | None, etag: str) -> bool:
    """Weak comparison (RFC 9110 §13.1.2): the opaque tags are equal, W/ or not."""
    if not if_none_match:
        return False
    opaque = etag.removeprefix("W/").strip('"')
    return any(tag == "*" or str(tag) == opaque for tag in if_none_match)
