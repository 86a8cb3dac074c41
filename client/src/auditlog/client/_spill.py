"""The spill file: events that found no room in memory, in order, on disk, until the service
takes them (by this client, or by the next one opened on the file)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from auditlog.client._events import Item

log = logging.getLogger("auditlog.client")


class SpillFileBusy(RuntimeError):
    """Another client (in this process or another) has the spill file open."""


def _torn_tail(fd: int, size: int) -> int:
    """The size without a last line cut short (a crash in the middle of a write)."""
    end = size
    while end > 0:
        start = max(0, end - 65536)
        chunk = os.pread(fd, end - start, start)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0


class SpillFile:
    """One line per event, `<run> <seq> <id> <json>`, appended by `emit` and read back by the
    sender; `<path>.pos` keeps how far the service has acknowledged it, so that a client
    opened after a crash resends from there (the API stores an id once, so the few events of
    an answer lost in the crash are sent twice and stored once).

    Not thread-safe: the client holds its lock around every call.
    """

    def __init__(self, path: Path, max_bytes: int, run: str):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._max_bytes = max_bytes
        self._run = run.encode()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            import fcntl  # noqa: PLC0415 - POSIX only; the rest of the client runs anywhere

            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise SpillFileBusy(f"{path} is in use by another client") from None
        self._pos_fd = os.open(path.with_name(path.name + ".pos"), os.O_RDWR | os.O_CREAT, 0o600)
        size = os.fstat(self._fd).st_size
        self._size = _torn_tail(self._fd, size)
        if self._size < size:
            log.warning("spill file %s: cut a torn last line (%d bytes)", path, size - self._size)
            os.ftruncate(self._fd, self._size)
        saved = os.pread(self._pos_fd, 32, 0).strip()
        position = int(saved) if saved.isdigit() else 0
        self._committed = position if position <= self._size else 0
        self._read = self._committed
        self._reader = open(path, "rb")  # noqa: SIM115 - kept open, closed in close()
        if self.pending:
            log.info("spill file %s: %d bytes to replay", path, self._size - self._committed)

    @property
    def pending(self) -> bool:
        """Whether it holds events the service has not acknowledged."""
        return self._committed < self._size

    @property
    def unread(self) -> bool:
        """Whether it holds events not taken into a batch yet."""
        return self._read < self._size

    @property
    def size(self) -> int:
        return self._size

    def append(self, item: Item) -> str | None:
        """Write one event; the reason if it could not be written (None when it was)."""
        line = b"%s %d %s %s\n" % (self._run, item.seq, item.id.encode(), item.raw)
        if self._size + len(line) > self._max_bytes:
            return f"the spill file is at its limit ({self._max_bytes} bytes)"
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            # A partial line would merge with the next: cut it off.
            os.ftruncate(self._fd, self._size)
            return f"the spill file cannot be written: {exc}"
        self._size += len(line)
        return None

    def read(self, max_events: int, max_bytes: int) -> tuple[list[Item], int]:
        """The next events (at least one if any are unread), and where they end."""
        self._reader.seek(self._read)
        items: list[Item] = []
        taken = 0
        position = self._read
        while position < self._size and len(items) < max_events:
            line = self._reader.readline()
            if not line.endswith(b"\n"):
                break  # cannot happen under the client's lock; never read half a line
            item = self._parse(line, position)
            if item is not None:
                if items and taken + len(item.raw) > max_bytes:
                    break
                items.append(item)
                taken += len(item.raw)
            position += len(line)
        self._read = position
        return items, position

    def _parse(self, line: bytes, position: int) -> Item | None:
        try:
            run, seq, event_id, raw = line.rstrip(b"\n").split(b" ", 3)
            mine = run == self._run
            return Item(event_id.decode(), raw, int(seq) if mine else -1)
        except ValueError:
            log.error("spill file %s: unreadable line at byte %d skipped", self.path, position)
            return None

    def commit(self, end: int) -> None:
        """The service has everything before `end`: remember it; empty the file once all
        of it is acknowledged."""
        self._committed = end
        if self._committed >= self._size:
            os.ftruncate(self._fd, 0)
            self._size = self._read = self._committed = 0
        self._save()

    def rewind(self) -> None:
        """Read again from the last acknowledged event (a batch given back at close)."""
        self._read = self._committed

    def _save(self) -> None:
        os.pwrite(self._pos_fd, b"%20d\n" % self._committed, 0)

    def close(self) -> None:
        # TODO(ops): fsynced here only: a crash of the machine (not of the process) can lose
        # what the kernel had not written; an option to fsync after each group of appends.
        self.rewind()
        self._save()
        os.fsync(self._fd)
        os.fsync(self._pos_fd)
        self._reader.close()
        os.close(self._pos_fd)
        os.close(self._fd)  # releases the lock
