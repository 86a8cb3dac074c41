"""The producer client's rate against one POST per event, through the same nginx.

`client_rate(url, token)` is self-contained (bench/run.py calls it with its topology's nginx
and key); alone:

    .venv/bin/python bench/client.py http://127.0.0.1:8080 "$TOKEN" [--events 100000]

Both sides send the same events from the same number of threads, each event emitted (or
posted) one at a time, and stop the clock at the last 202: the client batches behind
`emit`, the peer waits for each answer on a kept-alive connection of its own.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from auditlog.client import AuditClient, Failure


def _event(n: int) -> dict[str, Any]:
    """A realistic event (~450 bytes of JSON); the client assigns the id."""
    return {
        "type": "customer.billed",
        "service": "billing",
        "occurred_at": datetime.now(UTC).isoformat(),
        "actor": {"type": "user", "id": f"user-{n % 97}"},
        "subject": {"type": "customer", "id": f"cust-{n}"},
        "action": "bill",
        "outcome": "success",
        "context": {"host": "billing-1", "ip": "10.0.0.7", "trace_id": f"{n:032x}"},
        "data": {"amount": 1999 + n % 1000, "currency": "EUR", "invoice": f"INV-{n:08d}"},
    }


def _in_threads(threads: int, count: int, work: Callable[[int, int], None]) -> float:
    """Run work(first, last) over `count` items split across threads; the seconds taken."""
    share = count // threads
    ranges = [(t * share, count if t == threads - 1 else (t + 1) * share) for t in range(threads)]
    workers = [threading.Thread(target=work, args=r) for r in ranges]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return time.perf_counter() - started


def one_post_per_event(url: str, token: str, *, events: int, threads: int) -> dict[str, Any]:
    """The naive producer: POST each event and wait for its 202."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    refused: list[int] = []

    def post(first: int, last: int) -> None:
        with httpx.Client(headers=headers, timeout=30) as http:
            for n in range(first, last):
                answer = http.post(f"{url.rstrip('/')}/v1/events", content=json.dumps(_event(n)))
                if answer.status_code != 202:
                    refused.append(answer.status_code)

    seconds = _in_threads(threads, events, post)
    if refused:
        raise RuntimeError(f"one POST per event: {len(refused)} refused ({set(refused)})")
    return {"events": events, "seconds": seconds, "events_per_s": events / seconds}


def batched(url: str, token: str, *, events: int, threads: int) -> dict[str, Any]:
    """auditlog.client with its defaults: emit one at a time, close() at the end (it
    returns once the last batch is answered)."""
    failures: list[Failure] = []
    started = time.perf_counter()
    with AuditClient(url, token, on_failure=failures.append) as audit:

        def emit(first: int, last: int) -> None:
            for n in range(first, last):
                audit.emit(_event(n))

        _in_threads(threads, events, emit)
    seconds = time.perf_counter() - started
    stats = audit.stats
    if failures or stats.delivered != events:
        raise RuntimeError(f"client: {len(failures)} failed, {stats.delivered} delivered")
    return {
        "events": events,
        "seconds": seconds,
        "events_per_s": events / seconds,
        "requests": stats.requests,
        "retries": stats.retries,
        "events_per_request": events / stats.requests,
    }


def client_rate(
    url: str, token: str, *, events: int = 100_000, threads: int = 8, baseline_events: int = 20_000
) -> dict[str, Any]:
    """The client's rate for `events` events from `threads` threads, against one POST per
    event (over `baseline_events`: at its rate 100,000 would take minutes), and the ratio."""
    peer = one_post_per_event(url, token, events=baseline_events, threads=threads)
    client = batched(url, token, events=events, threads=threads)
    return {
        "threads": threads,
        "client": client,
        "one_post_per_event": peer,
        "ratio": client["events_per_s"] / peer["events_per_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("token")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--baseline-events", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    result = client_rate(
        args.url,
        args.token,
        events=args.events,
        threads=args.threads,
        baseline_events=args.baseline_events,
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
