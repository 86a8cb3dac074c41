"""The tail cache's scripts on a real Redis: ranges under out-of-order batches, gaps,
trimming, and what a read can vouch for."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aredis
from falcon.util import async_to_sync

from auditlog.settings import Settings
from auditlog.storage.tail import MAX_RANGES, TailCache, TailReader, TailSlice


def event(seq: int, service: str = "billing", type_: str = "customer.billed") -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "seq": seq,
        "type": type_,
        "service": service,
        # Nested "type" keys must not be mistaken for the event's own.
        "actor": {"type": "customer.billed.not", "id": "u"},
        "subject": {"type": type_ + "x", "id": "s"},
        "data": {"type": type_},
    }


def batch(first: int, last: int, **kwargs: Any) -> list[dict[str, Any]]:
    return [event(seq, **kwargs) for seq in range(first, last + 1)]


def seqs(found: TailSlice | None) -> list[int]:
    assert found is not None
    return [seq for seq, _ in found.events]


class Cache:
    """Both sides of the cache: the writer's (record) and the API's (reads, asyncio)."""

    def __init__(self, writer: TailCache, reader: TailReader):
        self._writer = writer
        self._reader = reader
        self.prefix = writer.prefix

    def record(self, stored: list[dict[str, Any]]) -> None:
        self._writer.record(stored)

    def newest(self, service: str | None, **kwargs: Any) -> TailSlice | None:
        return async_to_sync(self._reader.newest, service, **kwargs)

    def after(self, service: str | None, after: int, **kwargs: Any) -> TailSlice | None:
        return async_to_sync(self._reader.after, service, after, **kwargs)

    def head(self) -> int | None:
        return async_to_sync(self._reader.head)


@pytest.fixture
def cache(settings: Settings) -> Iterator[Cache]:
    prefix = f"{settings.redis_prefix}-cache-{uuid.uuid4().hex[:6]}:tail"
    client = redis.Redis.from_url(settings.redis_url)
    reader = TailReader(aredis.Redis.from_url(settings.redis_url), prefix)
    yield Cache(TailCache(client, prefix, size=10), reader)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()
    async_to_sync(reader.close)


def newest(cache: Cache, service: str | None = None, **kwargs: Any) -> TailSlice | None:
    kwargs.setdefault("type_exact", None)
    kwargs.setdefault("type_prefix", None)
    kwargs.setdefault("limit", 10)
    return cache.newest(service, **kwargs)


class TestRanges:
    def test_cold_cache_has_no_range(self, cache: Cache):
        assert newest(cache) is None
        assert cache.head() is None

    def test_batches_out_of_order_merge(self, cache: Cache):
        cache.record(batch(100, 102))
        cache.record(batch(106, 108))  # its predecessor's hook has not run yet
        found = newest(cache)
        assert found is not None
        assert (found.first, found.last) == (106, 108)  # the gap is not vouched for
        assert seqs(found) == [108, 107, 106]
        cache.record(batch(103, 105))  # the late hook closes the gap
        found = newest(cache)
        assert found is not None
        assert (found.first, found.last) == (100, 108)
        assert seqs(found) == list(range(108, 98, -1))[:9]

    def test_three_batches_in_any_order(self, cache: Cache):
        cache.record(batch(10, 11))
        cache.record(batch(16, 17))
        cache.record(batch(14, 15))
        cache.record(batch(12, 13))
        assert cache.head() == 17
        found = newest(cache)
        assert found is not None
        assert found.first == 10

    def test_a_lost_batch_leaves_a_gap_for_good(self, cache: Cache):
        cache.record(batch(0, 4))
        cache.record(batch(8, 9))  # 5..7 committed, never cached
        found = newest(cache, limit=5)
        assert found is not None
        assert (found.first, found.last) == (8, 9)
        assert seqs(found) == [9, 8]
        assert found.exhausted

    def test_ranges_are_bounded(self, cache: Cache, settings: Settings):
        for start in range(0, 3 * MAX_RANGES, 3):  # every batch leaves a gap
            cache.record(batch(start, start + 1))
        client = redis.Redis.from_url(settings.redis_url)
        assert client.zcard(f"{cache.prefix}:cover") == MAX_RANGES
        client.close()
        assert cache.head() == 3 * MAX_RANGES - 2


class TestTrimming:
    def test_sets_keep_the_newest_and_say_what_they_lost(self, cache: Cache):
        cache.record(batch(0, 5, service="a") + batch(6, 13, service="b"))
        whole = newest(cache)
        assert seqs(whole) == list(range(13, 3, -1))
        assert whole is not None
        assert whole.trimmed_upto == 3
        only_a = newest(cache, "a")
        assert seqs(only_a) == [5, 4, 3, 2, 1, 0]
        assert only_a is not None
        assert only_a.trimmed_upto == -1
        assert only_a.exhausted

    def test_a_batch_larger_than_the_cache(self, cache: Cache):
        cache.record(batch(0, 24))
        found = newest(cache)
        assert seqs(found) == list(range(24, 14, -1))
        assert found is not None
        assert found.trimmed_upto == 14


class TestTypeFilter:
    def test_exact_and_prefix_match_the_event_type_only(self, cache: Cache):
        cache.record(
            [
                event(0, type_="customer.billed"),
                event(1, type_="customer.billed.late"),
                event(2, type_="invoice.sent"),
                event(3, type_="customer.created"),
            ]
        )
        assert seqs(newest(cache, type_exact="customer.billed")) == [0]
        assert seqs(newest(cache, type_prefix="customer.")) == [3, 1, 0]
        assert seqs(newest(cache, type_prefix="customer.billed")) == [1, 0]
        assert seqs(newest(cache, type_exact="customer")) == []

    def test_scan_goes_past_one_page(self, settings: Settings, cache: Cache):
        big = TailCache(redis.Redis.from_url(settings.redis_url), cache.prefix, size=1000)
        events = [event(seq, type_="rare.kind" if seq < 3 else "common.kind") for seq in range(900)]
        big.record(events)
        found = cache.newest(None, limit=5, type_exact="rare.kind", type_prefix=None)
        assert seqs(found) == [2, 1, 0]
        assert found is not None
        assert found.exhausted
        big.close()


class TestAfter:
    def test_events_after_a_position_oldest_first(self, cache: Cache):
        cache.record(batch(0, 7))
        found = cache.after(None, 4, limit=10, type_exact=None, type_prefix=None)
        assert seqs(found) == [5, 6, 7]
        assert found is not None
        assert found.exhausted
        first = cache.after(None, 0, limit=2, type_exact=None, type_prefix=None)
        assert seqs(first) == [1, 2]
        assert first is not None
        assert not first.exhausted

    def test_cannot_vouch_before_its_range(self, cache: Cache):
        cache.record(batch(10, 12))
        found = cache.after(None, 5, limit=10, type_exact=None, type_prefix=None)
        assert found is not None
        assert (found.events, found.exhausted) == ([], False)
        assert seqs(cache.after(None, 9, limit=10, type_exact=None, type_prefix=None)) == [
            10,
            11,
            12,
        ]

    def test_cannot_vouch_past_what_trimming_removed(self, cache: Cache):
        cache.record(batch(0, 14, service="a"))  # 0..4 trimmed away
        lost = cache.after("a", 3, limit=10, type_exact=None, type_prefix=None)
        assert lost is not None
        assert (lost.events, lost.exhausted) == ([], False)
        kept = cache.after("a", 4, limit=20, type_exact=None, type_prefix=None)
        assert seqs(kept) == list(range(5, 15))
