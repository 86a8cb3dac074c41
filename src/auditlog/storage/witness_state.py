"""A witness's memory: the latest checkpoint it cosigned for each log, in one file.

The file is JSON, replaced atomically (written beside it, fsynced, renamed, the directory
fsynced): a crash leaves the old state or the new one, never half of either. One witness
process owns a state file at a time (an exclusive lock on `<file>.lock`), and within it one
submission at a time checks and updates it, as c2sp.org/tlog-witness requires.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

FORMAT_VERSION = 1


class StateFileError(Exception):
    """The state file cannot be read, or another witness holds it."""


@dataclass(frozen=True)
class LogState:
    """The latest checkpoint cosigned for one origin."""

    tree_size: int
    root_hash: bytes
    checkpoint: str  # the note as cosigned: the log's signature(s) and ours

    def as_dict(self) -> dict[str, Any]:
        return {
            "tree_size": self.tree_size,
            "root_hash": base64.b64encode(self.root_hash).decode(),
            "checkpoint": self.checkpoint,
        }

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> LogState:
        return cls(
            int(value["tree_size"]),
            base64.b64decode(value["root_hash"], validate=True),
            str(value["checkpoint"]),
        )


class WitnessState:
    def __init__(self, path: Path):
        self._path = path
        self._mutex = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file: IO[bytes] = open(path.with_name(path.name + ".lock"), "ab")  # noqa: SIM115
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise StateFileError(f"{path} is in use by another witness process") from None
        try:
            self._logs = self._load()
        except StateFileError:
            self._lock_file.close()
            raise

    def close(self) -> None:
        self._lock_file.close()

    def _load(self) -> dict[str, LogState]:
        try:
            raw = orjson.loads(self._path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, orjson.JSONDecodeError) as exc:
            raise StateFileError(f"{self._path}: {exc}") from None
        try:
            if raw.get("version") != FORMAT_VERSION:
                raise ValueError(f"version {raw.get('version')!r} is not {FORMAT_VERSION}")
            return {origin: LogState.from_dict(v) for origin, v in raw["logs"].items()}
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise StateFileError(f"{self._path}: not a witness state file: {exc}") from None

    def get(self, origin: str) -> LogState | None:
        return self._logs.get(origin)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold while checking a submission against the state and recording it."""
        with self._mutex:
            yield

    def put(self, origin: str, state: LogState) -> None:
        """Record a log's new state on disk before returning (call within `exclusive`)."""
        logs = {**self._logs, origin: state}
        body = orjson.dumps(
            {"version": FORMAT_VERSION, "logs": {o: s.as_dict() for o, s in logs.items()}},
            option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS,
        )
        directory = self._path.parent
        fd, temporary = tempfile.mkstemp(prefix=self._path.name, dir=directory)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(body)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self._path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._logs = logs
