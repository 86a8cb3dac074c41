"""Export formats: NDJSON lines, CSV with the envelope flattened, chunks of bounded size."""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson

from auditlog.canonical import EVENT_FIELDS
from auditlog.services import export
from auditlog.services.export import csv_cells, csv_chunks, csv_columns, ndjson_chunks


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

    def test_round_trip_through_a_csv_reader(self):
        events = [stored(1), stored(2, actor=None, publisher="key-1")]
        text = b"".join(csv_chunks(iter(events))).decode()
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
        assert [r["id"] for r in rows] == ["id-1", "id-2"]
        assert orjson.loads(rows[0]["data"]) == events[0]["data"]
        assert rows[0]["actor_id"] == "u-1"
        assert rows[1]["actor_id"] == rows[1]["actor"] == ""
        assert rows[1]["publisher"] == "key-1"
        assert rows[0]["seq"] == "1"

    def test_new_fields_become_columns(self):
        event = {**stored(1), "leaf_hash": "ab12"}
        text = b"".join(csv_chunks(iter([event]))).decode()
        header, row = list(csv.reader(io.StringIO(text)))
        assert header[-1] == "leaf_hash"
        assert row[-1] == "ab12"

    def test_empty_export_is_a_header(self):
        text = b"".join(csv_chunks(iter([]))).decode()
        assert text == ",".join(csv_columns(EVENT_FIELDS)) + "\r\n"


class TestChunks:
    def test_ndjson_is_one_event_a_line_in_bounded_chunks(self, monkeypatch: Any):
        monkeypatch.setattr(export, "CHUNK_BYTES", 1000)
        events = [stored(n) for n in range(50)]
        chunks = list(ndjson_chunks(iter(events)))
        assert len(chunks) > 5
        assert all(len(c) < 1000 + 400 for c in chunks)
        lines = b"".join(chunks).split(b"\n")
        assert lines[-1] == b""
        assert [orjson.loads(line) for line in lines[:-1]] == events

    def test_csv_chunks_are_bounded(self, monkeypatch: Any):
        monkeypatch.setattr(export, "CHUNK_BYTES", 1000)
        chunks = list(csv_chunks(iter([stored(n) for n in range(50)])))
        assert len(chunks) > 5
        assert all(len(c) < 1000 + 600 for c in chunks)
