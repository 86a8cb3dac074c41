"""A batch's events made ready for COPY before the write lock is taken.

Everything about an event that does not depend on its seq (its canonical JSON around
`seq`, its COPY line around `seq` and `leaf_hash`) is computed outside the lock that
orders batches, so that the time under the lock is a SHA-256 and a string join per event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from auditlog.canonical import event_document
from auditlog.integrity.heads import b64
from auditlog.integrity.leaf import leaf_for_seq, seq_parts

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
    """A field in COPY's text format: backslashes doubled (the envelope's rules already
    keep tabs and newlines out of plain fields; JSON escapes them in strings)."""
    return _NULL if value is None else value.replace("\\", "\\\\")


def _json(value: Any) -> str:
    return _NULL if value is None else orjson.dumps(value).decode().replace("\\", "\\\\")


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
        without_seq = {k: v for k, v in document.items() if k != "seq"}
        before, after = seq_parts(without_seq)
        d = document
        return cls(
            id=d["id"],
            service=d["service"],
            occurred_at=d["occurred_at"],
            document=document,
            before_seq=before,
            after_seq=after,
            copy_head=f"{d['occurred_at']}\t{d['id']}\t",
            copy_tail="\t".join(
                (
                    "",
                    d["received_at"],
                    _text(d["type"]),
                    _text(d["service"]),
                    _text(d["publisher"]),
                    _text(d["action"]),
                    d["outcome"],
                    _json(d["actor"]),
                    _json(d["subject"]),
                    _json(d["context"]),
                    _json(d["data"]),
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
