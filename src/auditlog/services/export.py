"""Exports: every event matching the list filters, in occurred_at order, as NDJSON or CSV,
streamed in chunks from a server-side cursor so that memory stays flat."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain
from typing import Any

import orjson

from auditlog.canonical import EVENT_FIELDS
from auditlog.errors import InvalidQuery
from auditlog.services.queries import FILTER_PARAMS, Params, event_filter, single_values
from auditlog.services.streams import ClosingStream, Slots
from auditlog.storage.events import EventReader

EXPORT_PARAMS = (*FILTER_PARAMS, "format")
# Bytes gathered before a chunk is handed to the server: few writes, little memory.
CHUNK_BYTES = 64 * 1024
# Objects whose id and type get columns of their own in CSV (the object stays, as JSON).
_PARTIES = ("actor", "subject")


@dataclass(frozen=True)
class ExportFormat:
    name: str
    media_type: str
    encode: Callable[[Iterator[dict[str, Any]]], Iterator[bytes]]


@dataclass(frozen=True)
class Export:
    """A started export: what to call it, and the body (close it to free its cursor)."""

    media_type: str
    filename: str
    body: ClosingStream


def ndjson_chunks(events: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    """One event per line, each exactly as the API returns it."""
    buffer = bytearray()
    for event in events:
        buffer += orjson.dumps(event)
        buffer += b"\n"
        if len(buffer) >= CHUNK_BYTES:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


def csv_columns(fields: Iterable[str]) -> list[str]:
    """CSV header for events with these fields: the envelope flattened, `data` as JSON."""
    columns: list[str] = []
    for name in fields:
        if name in _PARTIES:
            columns += [f"{name}_id", f"{name}_type"]
        columns.append(name)
    return columns


def csv_cells(event: Mapping[str, Any]) -> list[str]:
    """One CSV row, aligned with csv_columns(event): objects are JSON, null is empty."""
    cells: list[str] = []
    for name, value in event.items():
        if name in _PARTIES:
            party = value or {}
            cells += [_cell(party.get("id")), _cell(party.get("type"))]
        cells.append(_cell(value))
    return cells


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def csv_chunks(events: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    """RFC 4180 CSV (CRLF, quoted where needed) with a header row, in UTF-8."""
    text = io.StringIO()
    writer = csv.writer(text)
    first = next(events, None)
    writer.writerow(csv_columns(first.keys() if first is not None else EVENT_FIELDS))
    if first is not None:
        for event in chain([first], events):
            writer.writerow(csv_cells(event))
            if text.tell() >= CHUNK_BYTES:
                yield text.getvalue().encode()
                text.seek(0)
                text.truncate()
    if text.tell():
        yield text.getvalue().encode()


FORMATS = {
    "ndjson": ExportFormat("ndjson", "application/x-ndjson", ndjson_chunks),
    "csv": ExportFormat("csv", "text/csv; charset=utf-8", csv_chunks),
}


class ExportService:
    """Starts exports: validates the query, opens the cursor, hands back the stream."""

    def __init__(
        self,
        store: EventReader,
        *,
        max_per_process: int,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self._store = store
        self._slots = Slots("exports", max_per_process)
        self._now = now

    @property
    def running(self) -> int:
        return self._slots.held

    def export(self, params: Params) -> Export:
        values = single_values(params, EXPORT_PARAMS)
        name = values.get("format", "ndjson")
        fmt = FORMATS.get(name)
        if fmt is None:
            raise InvalidQuery("format", f"must be one of {', '.join(FORMATS)}")
        flt = event_filter(values)
        release = self._slots.acquire()
        try:
            rows = self._store.export(flt)
            # Run the query now: a database that does not answer is a 503, not a cut stream.
            first = next(rows, None)
        except BaseException:
            release()
            raise
        events = rows if first is None else chain([first], rows)
        body = ClosingStream(_closing(fmt.encode(events), rows), release)
        stamp = self._now().strftime("%Y%m%dT%H%M%SZ")
        return Export(fmt.media_type, f"auditlog-events-{stamp}.{fmt.name}", body)


def _closing(chunks: Iterator[bytes], rows: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    """The chunks; on close (end, error or client gone), the cursor's connection too."""
    try:
        yield from chunks
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()
