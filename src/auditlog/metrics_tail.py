"""Counters of the live tail: how often the cache answers, and why it did not.

Defined once per process in prometheus_client's default registry; the /metrics endpoint
exports them (in multiprocess mode under gunicorn).
"""

from __future__ import annotations

from prometheus_client import Counter

TAIL_HITS = Counter(
    "auditlog_tail_hits",
    "Tail reads answered by the Redis cache (read: tail or follow).",
    ["read"],
)
TAIL_MISSES = Counter(
    "auditlog_tail_misses",
    "Tail reads the cache could not answer in full (cold, behind, trimmed, or a type "
    "filter it cannot answer exactly); the database answered.",
    ["read", "reason"],
)
TAIL_FALLBACKS = Counter(
    "auditlog_tail_fallbacks",
    "Tail reads the database answered because Redis did not (error or timeout).",
    ["read"],
)
TAIL_UPDATE_FAILURES = Counter(
    "auditlog_tail_update_failures",
    "Committed batches the writer could not add to the tail cache (Redis did not answer).",
)

MISS_COLD = "cold"  # no covered range at all: Redis restarted, or nothing written yet
MISS_SHORT = "short"  # the covered range holds fewer matching events than asked for
MISS_RANGE = "range"  # a follower is further back than the covered range
MISS_BEHIND = "behind"  # the database has newer events than the cache (hook late or lost)
