"""What an answer of POST /v1/events means for the batch that got it (no I/O here: the
thread client and the asyncio client drive the same Delivery)."""

from __future__ import annotations

import json
import random
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from auditlog.client._events import FailureKind, Item
from auditlog.client._options import Options


def batch_body(items: list[Item]) -> bytes:
    return b"[" + b",".join(item.raw for item in items) + b"]"


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP-date)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True)
class Settled:
    """Items whose fate is known: stored (failure None), or not and why."""

    items: list[Item]
    kind: FailureKind | None = None
    detail: str = ""
    status: int | None = None


def _description(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _reason(status: int, body: bytes) -> str:
    answer = _description(body)
    if isinstance(answer, dict) and "title" in answer:
        return f"{status} {answer['title']}: {answer.get('description', '')}".rstrip(": ")
    return f"{status} {body[:200].decode('utf-8', 'replace')}".rstrip()


def _problems(body: bytes, count: int) -> dict[int, str] | None:
    """A 422's `errors`, by index in the batch: the reasons of each bad event."""
    answer = _description(body)
    errors = answer.get("errors") if isinstance(answer, dict) else None
    if not isinstance(errors, list):
        return None
    found: dict[int, list[str]] = {}
    for error in errors:
        index = error.get("index") if isinstance(error, dict) else None
        if not isinstance(index, int) or not 0 <= index < count:
            return None
        found.setdefault(index, []).append(f"{error.get('field', '$')}: {error.get('message')}")
    return {index: "; ".join(reasons) for index, reasons in found.items()} or None


_FATAL: dict[int, FailureKind] = {401: "unauthorized", 403: "forbidden"}


class Delivery:
    """One batch on its way: the part to send now, and what each answer does to it.

    - 2xx: the part is stored.
    - 422: the events the answer names (by index) fail; the rest is sent again at once.
    - 429, 408, 5xx and transport errors: the part is sent again after a backoff with
      full jitter, or after Retry-After when the answer has one (never sooner).
    - 401, 403: the part fails, not retried (another attempt would get the same).
    - 400 or 413 for several events: the part is halved until the culprit is alone, so one
      event the API cannot read does not sink its neighbours; alone, it fails.
    - any other answer: the part fails.
    """

    def __init__(self, items: list[Item], options: Options, rng: random.Random | None = None):
        self._parts: deque[list[Item]] = deque([items] if items else [])
        self._options = options
        self._rng = rng or random.Random()
        self._attempt = 0
        self.requests = 0
        self.retries = 0

    @property
    def part(self) -> list[Item] | None:
        """What to send next; None when every item is settled."""
        return self._parts[0] if self._parts else None

    def remaining(self) -> list[Item]:
        """Every item not settled yet, in order."""
        return [item for part in self._parts for item in part]

    def answered(  # noqa: PLR0911 - one return per kind of answer, as the docstring lists them
        self, status: int, retry_after: str | None, body: bytes
    ) -> tuple[list[Settled], float]:
        """Settle on an answer; the seconds to wait before sending what is left."""
        part = self._parts[0]
        self.requests += 1
        if 200 <= status < 300:
            return self._done([Settled(part)])
        if status == 422:
            problems = _problems(body, len(part))
            if problems is None:
                return self._done([Settled(part, "rejected", _reason(status, body), status)])
            self._attempt = 0
            rest = [item for index, item in enumerate(part) if index not in problems]
            if rest:
                self._parts[0] = rest
            else:
                self._parts.popleft()
            return [
                Settled([part[index]], "rejected", reason, status)
                for index, reason in sorted(problems.items())
            ], 0.0
        if status in _FATAL:
            return self._done([Settled(part, _FATAL[status], _reason(status, body), status)])
        if status in (400, 413) and len(part) > 1:
            self._parts.popleft()
            half = len(part) // 2
            self._parts.extendleft([part[half:], part[:half]])
            return [], 0.0
        if status in (408, 429) or status >= 500:
            return [], self._backoff(retry_after_s(retry_after))
        return self._done([Settled(part, "refused", _reason(status, body), status)])

    def failed(self) -> float:
        """The request got no answer (refused, reset, timed out): seconds to wait."""
        self.requests += 1
        return self._backoff(None)

    def _done(self, settled: list[Settled]) -> tuple[list[Settled], float]:
        self._parts.popleft()
        self._attempt = 0
        return settled, 0.0

    def _backoff(self, retry_after: float | None) -> float:
        self._attempt += 1
        self.retries += 1
        if retry_after is not None:
            # As asked, and a little later for some, so that clients told the same second
            # do not all come back in it.
            return retry_after * (1 + self._rng.uniform(0, 0.1))
        ceiling = min(
            self._options.backoff_max_s,
            self._options.backoff_base_s * 2 ** min(self._attempt - 1, 32),
        )
        return self._rng.uniform(0, ceiling)
