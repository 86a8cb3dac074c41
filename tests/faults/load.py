"""The load generator: producers posting batches of events over HTTP, as a service would.

Every id is the producer's own (a UUID in the event), so an answer that never came can be
retried with the same ids and stored once. Every id that got a 202 is recorded with the
moment of its 202: that is the promise the suite checks.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import orjson
import requests

from tests import factories

# Answers a producer may meet during a fault and retry: the service is down or refusing.
TRANSIENT = {"502", "503", "504"}


@dataclass
class Answer:
    at: float  # time.monotonic() when the answer (or the error) came
    status: str  # "202", "503", … or the exception's name ("ConnectionError", "ReadTimeout")
    retry_after: str | None = None
    events: int = 0


@dataclass
class LoadStats:
    """What the producers saw; a copy, safe to read while they run."""

    accepted: list[tuple[float, list[str]]] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)


class Load:
    """`producers` threads, each posting `batch` events a request through `url`.

    rate: events per second in all (None: as fast as answers come). retry: a batch that
    was not accepted is sent again, same ids, after the Retry-After (at most
    `max_retry_wait_s`); without retry it is dropped and a fresh batch follows.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        producers: int = 4,
        batch: int = 50,
        rate: float | None = 1000.0,
        retry: bool = True,
        max_retry_wait_s: float = 0.5,
        timeout_s: float = 15.0,
    ):
        self._url = url
        self._token = token
        self._producers = producers
        self._batch = batch
        self._interval = None if rate is None else producers * batch / rate
        self._retry = retry
        self._max_retry_wait_s = max_retry_wait_s
        self._timeout_s = timeout_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stats = LoadStats()
        self.failure: BaseException | None = None

    def __enter__(self) -> Load:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        for n in range(self._producers):
            thread = threading.Thread(target=self._produce, name=f"producer-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self._timeout_s + 10)
        if self.failure is not None:
            raise AssertionError(f"a producer failed: {self.failure!r}") from self.failure

    # --- what was seen ---------------------------------------------------------------------
    def stats(self) -> LoadStats:
        with self._lock:
            return LoadStats(
                list(self._stats.accepted), list(self._stats.answers), list(self._stats.sent)
            )

    def accepted_ids(self, until: float | None = None) -> list[str]:
        """Every id answered 202 (up to the monotonic moment `until`)."""
        return [i for at, ids in self.stats().accepted if until is None or at <= until for i in ids]

    def accepted_count(self) -> int:
        with self._lock:
            return sum(len(ids) for _, ids in self._stats.accepted)

    def wait_accepted(self, count: int, timeout: float = 30.0) -> None:
        """Until `count` more events than now have been accepted."""
        target = self.accepted_count() + count
        deadline = time.monotonic() + timeout
        while self.accepted_count() < target:
            if self.failure is not None:
                raise AssertionError(f"a producer failed: {self.failure!r}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"only {self.accepted_count()} of {target} events accepted in {timeout} s; "
                    f"answers: {self.status_counts()}"
                )
            time.sleep(0.05)

    def first_accepted_after(self, moment: float) -> float | None:
        times = [at for at, _ in self.stats().accepted if at > moment]
        return min(times) if times else None

    def status_counts(self, since: float | None = None, until: float | None = None) -> Counter[str]:
        return Counter(
            a.status
            for a in self.stats().answers
            if (since is None or a.at >= since) and (until is None or a.at <= until)
        )

    def offered(self, since: float, until: float) -> int:
        """Events sent in requests answered between the two moments (accepted or not)."""
        return sum(a.events for a in self.stats().answers if since <= a.at <= until)

    # --- the producers -----------------------------------------------------------------------
    def _produce(self) -> None:
        try:
            with requests.Session() as http:
                http.headers.update(
                    {"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"}
                )
                self._loop(http)
        except BaseException as exc:  # reported by stop()/wait_accepted(), not lost in a thread
            self.failure = exc

    def _loop(self, http: requests.Session) -> None:
        next_at = time.monotonic()
        body: bytes | None = None
        ids: list[str] = []
        while not self._stop.is_set():
            if body is None:
                events = factories.events(self._batch)
                ids = [e["id"] for e in events]
                body = orjson.dumps(events)
                with self._lock:
                    self._stats.sent.extend(ids)
            answer = self._post(http, body, len(ids))
            if answer.status == "202":
                body = None
                if self._interval is not None:
                    next_at = max(next_at + self._interval, time.monotonic() - self._interval)
                    self._stop.wait(max(0.0, next_at - time.monotonic()))
                continue
            if not self._retry:
                body = None
            wait = 0.05
            if answer.retry_after is not None:
                wait = min(float(answer.retry_after), self._max_retry_wait_s)
            self._stop.wait(wait)

    def _post(self, http: requests.Session, body: bytes, count: int) -> Answer:
        try:
            response = http.post(self._url, data=body, timeout=self._timeout_s)
        except requests.RequestException as exc:
            answer = Answer(time.monotonic(), type(exc).__name__, events=count)
            with self._lock:
                self._stats.answers.append(answer)
            return answer
        answer = Answer(
            time.monotonic(),
            str(response.status_code),
            response.headers.get("Retry-After"),
            events=count,
        )
        accepted: list[str] = []
        if response.status_code == 202:
            accepted = list(response.json()["ids"])
        with self._lock:
            self._stats.answers.append(answer)
            if accepted:
                self._stats.accepted.append((answer.at, accepted))
        return answer
