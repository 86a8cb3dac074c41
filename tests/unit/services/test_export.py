"""Export formats: NDJSON lines, CSV with the envelope flattened, chunks of bounded size."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import Any

import orjson

from auditlog.canonical import EVENT_FIELDS
from auditlog.services import export
from auditlog.services.export import csv_cells, csv_chunks, csv_columns, ndjson_chunks


async def pages(events: list[dict[str, Any]]) -> AsyncIterator[list[dict[str, Any]]]:
    """The events as the store hands them out: a page at a time (here, one per page)."""
    for event in events:
        yield [event]


async def chunks_of(encode: Any, events: list[dict[str, Any]]) -> list[bytes]:
    return [chunk async for chunk in encode(pages(events))]


def stored(n: int, **overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = dict.fromkeys(EVENT_FIELDS)
    event.update(
        id=f"id-{n}",
        seq=n,
        type="customer.billed",
        service="billing",
        actor={"id": "u-1", "type": "user", "email": "a@example.com"},
        data={"text": 'comma, "quote"\nnewline', "n": n},
    )
    event.update(overrides)
    return event


class TestCsv:
    def test_parties_get_id_and_type_columns(self):
        columns = csv_columns(EVENT_FIELDS)
        assert columns[columns.index("actor") - 2 : columns.index("actor") + 1] == [
            "actor_id",
            "actor_type",
            "actor",
        ]
        assert "subject_id" in columns
        assert len(csv_cells(stored(1))) == len(columns)

    async def test_round_trip_through_a_csv_reader(self):
        events = [stored(1), stored(2, actor=None, publisher="key-1")]
        text = b"".join(await chunks_of(csv_chunks, events)).decode()
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
        assert [r["id"] for r in rows] == ["id-1", "id-2"]
        assert orjson.loads(rows[0]["data"]) == events[0]["data"]
        assert rows[0]["actor_id"] == "u-1"
        assert rows[1]["actor_id"] == rows[1]["actor"] == ""
        assert rows[1]["publisher"] == "key-1"
        assert rows[0]["seq"] == "1"

    async def test_new_fields_become_columns(self):
        event = {**stored(1), "leaf_hash": "ab12"}
        text = b"".join(await chunks_of(csv_chunks, [event])).decode()
        header, row = list(csv.reader(io.StringIO(text)))
        assert header[-1] == "leaf_hash"
        assert row[-1] == "ab12"

    async def test_empty_export_is_a_header(self):
        text = b"".join(await chunks_of(csv_chunks, [])).decode()
        assert text == ",".join(csv_columns(EVENT_FIELDS)) + "\r\n"


class TestChunks:
    async def test_ndjson_is_one_event_a_line_in_bounded_chunks(self, monkeypatch: Any):
        monkeypatch.setattr(export, "CHUNK_BYTES", 1000)
        events = [stored(n) for n in range(50)]
        chunks = await chunks_of(ndjson_chunks, events)
        assert len(chunks) > 5
        assert all(len(c) < 1000 + 400 for c in chunks)
        lines = b"".join(chunks).split(b"\n")
        assert lines[-1] == b""
        assert [orjson.loads(line) for line in lines[:-1]] == events

    async def test_csv_chunks_are_bounded(self, monkeypatch: Any):
        monkeypatch.setattr(export, "CHUNK_BYTES", 1000)
        chunks = await chunks_of(csv_chunks, [stored(n) for n in range(50)])
        assert len(chunks) > 5
        assert all(len(c) < 1000 + 600 for c in chunks)
