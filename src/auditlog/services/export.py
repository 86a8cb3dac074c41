"""Exports: every event matching the list filters, in occurred_at order, as NDJSON or CSV,
streamed in chunks from a server-side cursor so that memory stays flat."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from auditlog.canonical import EVENT_FIELDS
from auditlog.errors import InvalidQuery
from auditlog.services.queries import FILTER_PARAMS, Params, event_filter, single_values
from auditlog.services.streams import ClosingStream, KeyCheck, Slots, StillAllowed
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
    encode: Callable[[AsyncIterator[list[dict[str, Any]]]], AsyncIterator[bytes]]


@dataclass(frozen=True)
class Export:
    """A started export: what to call it, and the body (close it to free its cursor)."""

    media_type: str
    filename: str
    body: ClosingStream


async def ndjson_chunks(pages: AsyncIterator[list[dict[str, Any]]]) -> AsyncIterator[bytes]:
    """One event per line, each exactly as the API returns it."""
    buffer = bytearray()
    async for page in pages:
        for event in page:
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


async def csv_chunks(pages: AsyncIterator[list[dict[str, Any]]]) -> AsyncIterator[bytes]:
    """RFC 4180 CSV (CRLF, quoted where needed) with a header row, in UTF-8."""
    text = io.StringIO()
    writer = csv.writer(text)
    header = False
    async for page in pages:
        if not header and page:
            writer.writerow(csv_columns(page[0].keys()))
            header = True
        writer.writerows(csv_cells(event) for event in page)
        if text.tell() >= CHUNK_BYTES:
            yield text.getvalue().encode()
            text.seek(0)
            text.truncate()
    if not header:
        writer.writerow(csv_columns(EVENT_FIELDS))
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
        max_per_key: int,
        key_check_s: float,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self._store = store
        self._slots = Slots("exports", max_per_process, per_key=max_per_key)
        self._key_check_s = key_check_s
        self._now = now

    @property
    def running(self) -> int:
        return self._slots.held

    async def export(self, params: Params, *, key: str, still_allowed: StillAllowed) -> Export:
        """Start an export for `key`; it ends early if `still_allowed` says the key was
        revoked meanwhile."""
        values = single_values(params, EXPORT_PARAMS)
        name = values.get("format", "ndjson")
        fmt = FORMATS.get(name)
        if fmt is None:
            raise InvalidQuery("format", f"must be one of {', '.join(FORMATS)}")
        flt = event_filter(values)
        release = self._slots.acquire(key)
        try:
            pages = self._store.export(flt)
            # Run the query now: a database that does not answer is a 503, not a cut stream.
            first = await anext(pages, None)
        except BaseException:
            release()
            raise
        check = KeyCheck(still_allowed, self._key_check_s)
        body = ClosingStream(fmt.encode(_pages(first, pages, check)), release, holds=pages)
        stamp = self._now().strftime("%Y%m%dT%H%M%SZ")
        return Export(fmt.media_type, f"auditlog-events-{stamp}.{fmt.name}", body)


async def _pages(
    first: list[dict[str, Any]] | None,
    rest: AsyncIterator[list[dict[str, Any]]],
    check: KeyCheck,
) -> AsyncIterator[list[dict[str, Any]]]:
    """The pages, the first already read; the cursor closed however they end. A key revoked
    meanwhile ends the export (the download is then shorter than the query's answer)."""
    try:
        if first is None:
            return
        yield first
        async for page in rest:
            if not await check.allowed():
                return
            yield page
    finally:
        close = getattr(rest, "aclose", None)
        if close is not None:
            await close()
