"""A batch's events made ready for COPY before the write lock is taken.

Everything about an event that does not depend on its seq (its canonical JSON around
`seq`, its COPY line around `seq` and `leaf_hash`) is computed outside the lock that
orders batches, so that the time under the lock is a SHA-256 and a string join per event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from auditlog.canonical import event_document
from auditlog.integrity.heads import b64
from auditlog.integrity.leaf import leaf_for_seq, seq_parts_of, value_bytes

# The COPY column order; the line below is built in exactly this order.
COPY_COLUMNS = (
    "occurred_at",
    "id",
    "seq",
    "received_at",
    "type",
    "service",
    "publisher",
    "action",
    "outcome",
    "actor",
    "subject",
    "context",
    "data",
    "leaf_hash",
)
COPY_SQL = f"COPY events ({', '.join(COPY_COLUMNS)}) FROM STDIN"
COPY_CHUNK = 250  # lines per write: small enough to overlap, large enough to be cheap
_NULL = "\\N"


def _text(value: str | None) -> str:
    """A value in COPY's text format, whatever it holds.

    In that format a backslash starts an escape, a tab ends a column and a newline or a
    carriage return ends a row: each is written as its escape, so that no value can end or
    shift a row, whatever the edge let through (a stream entry that did not come from the
    API, say). A value that is the two characters backslash-N stays text (`\\\\N`); only
    None is NULL. U+0000, which PostgreSQL's text cannot hold, is refused by COPY itself.
    """
    if value is None:
        return _NULL
    value = value.replace("\\", "\\\\")
    # Rare: checked first (each test is a memchr), since most values hold none of them.
    if "\t" in value or "\n" in value or "\r" in value:
        value = value.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return value


def _json(value: Any, canonical: bytes) -> str:
    """A JSON column: the value's canonical bytes (JSONB keeps no key order anyway)."""
    return _NULL if value is None else _text(canonical.decode())


@dataclass(slots=True)
class PreparedEvent:
    """An event with everything but its seq and leaf hash worked out."""

    id: str
    service: str
    occurred_at: str
    document: dict[str, Any]
    before_seq: bytes
    after_seq: bytes
    copy_head: str
    copy_tail: str

    @classmethod
    def of(cls, event: dict[str, Any]) -> PreparedEvent:
        document = event_document(event, 0)
        # Each value serialized once: the leaf's canonical bytes and the JSON columns.
        members = {k: value_bytes(v) for k, v in document.items() if k != "seq"}
        before, after = seq_parts_of(members)
        d = document
        return cls(
            id=d["id"],
            service=d["service"],
            occurred_at=d["occurred_at"],
            document=document,
            before_seq=before,
            after_seq=after,
            copy_head=f"{_text(d['occurred_at'])}\t{_text(d['id'])}\t",
            copy_tail="\t".join(
                (
                    "",
                    _text(d["received_at"]),
                    _text(d["type"]),
                    _text(d["service"]),
                    _text(d["publisher"]),
                    _text(d["action"]),
                    _text(d["outcome"]),
                    *(_json(d[k], members[k]) for k in ("actor", "subject", "context", "data")),
                    "\\\\x",  # bytea in hex, its backslash escaped for COPY
                )
            ),
        )

    def leaf(self, seq: int) -> bytes:
        return leaf_for_seq(self.before_seq, self.after_seq, seq)

    def place(self, seq: int, leaf: bytes) -> str:
        """Fix the event at seq: finish its document and return its COPY line."""
        self.document["seq"] = seq
        self.document["leaf_hash"] = b64(leaf)
        return f"{self.copy_head}{seq}{self.copy_tail}{leaf.hex()}\n"
