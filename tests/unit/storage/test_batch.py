"""The COPY lines of a batch: no value can break or shift a row, whatever it holds."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from auditlog.storage.batch import COPY_COLUMNS, PreparedEvent
from tests import factories

# PostgreSQL's decoding of one column of COPY's text format (the COPY documentation,
# "Text Format"): \N alone is NULL; a backslash escapes the next character, with the
# C-like letters, octal and hex spelled out; any other escaped character is itself.
_LETTERS = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)", re.DOTALL)


def copy_decode(column: str) -> str | None:
    if column == "\\N":
        return None

    def one(match: re.Match[str]) -> str:
        code = match[1]
        if code[0] == "x" and len(code) > 1:
            return chr(int(code[1:], 16))
        if code[0].isdigit() and code[0] < "8":
            return chr(int(code, 8))
        return _LETTERS.get(code, code)

    return _ESCAPE.sub(one, column)


def row_of(event: dict[str, Any]) -> dict[str, str | None]:
    """The event's COPY line, split as PostgreSQL splits it."""
    line = PreparedEvent.of(event).place(7, b"\x01" * 32)
    assert line.endswith("\n")
    assert line.count("\n") == 1, "a value ended the row early"
    assert "\r" not in line
    columns = line[:-1].split("\t")
    assert len(columns) == len(COPY_COLUMNS), "a value shifted the columns"
    return dict(zip(COPY_COLUMNS, map(copy_decode, columns), strict=True))


NASTY = [
    "tab\there",
    "new\nline",
    "carriage\rreturn",
    "crlf\r\n",
    "back\\slash",
    "\\N",
    "\\.",
    "\\",
    "\\\\t",
    "trailing\\",
    "\t\n\r\\",
]


def queued(**overrides: Any) -> dict[str, Any]:
    event = factories.event()
    event.update(received_at=event["occurred_at"], publisher="billing-writer")
    event.update(overrides)
    return event


class TestCopyLine:
    """Every text column is encoded so that the row decodes back to exactly the event."""

    @pytest.mark.parametrize("value", NASTY)
    @pytest.mark.parametrize("column", ["type", "service", "publisher", "action"])
    def test_plain_columns_hold_any_text(self, column: str, value: str):
        assert row_of(queued(**{column: value}))[column] == value

    @pytest.mark.parametrize("value", NASTY)
    def test_every_column_of_one_event_at_once(self, value: str):
        """Fields the writer takes as they come (timestamps, id, outcome) are encoded too:
        PostgreSQL refuses what does not parse, but the row is never broken by it."""
        event = queued(
            id=value,
            occurred_at=value,
            received_at=value,
            type=value,
            service=value,
            publisher=value,
            action=value,
            outcome=value,
        )
        row = row_of(event)
        for column in ("id", "occurred_at", "received_at", "type", "service", "publisher"):
            assert row[column] == value, column
        assert (row["action"], row["outcome"]) == (value, value)

    @pytest.mark.parametrize("value", NASTY)
    def test_json_columns_hold_any_text(self, value: str):
        event = queued(
            actor={"id": value, value: value},
            subject={"id": value},
            context={"host": value},
            data={"note": value, "list": [value]},
        )
        row = row_of(event)
        for column in ("actor", "subject", "context", "data"):
            decoded = row[column]
            assert decoded is not None
            assert orjson.loads(decoded) == event[column], column

    def test_absent_values_are_null_and_the_text_backslash_n_is_not(self):
        row = row_of(queued(publisher=None, action=None, context=None))
        assert (row["publisher"], row["action"], row["context"]) == (None, None, None)
        assert row_of(queued(action="\\N"))["action"] == "\\N"

    def test_seq_and_leaf_hash_are_where_they_belong(self):
        row = row_of(queued())
        assert row["seq"] == "7"
        assert row["leaf_hash"] == "\\x" + "01" * 32
