"""The tail's decisions: when the cache may answer, when the database must, and how a
follower moves. The cache and store here are in-memory stand-ins; the real ones are
exercised by tests/integration/test_tail.py and test_tail_cache.py."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from auditlog.errors import InvalidQuery, Overloaded, Unavailable
from auditlog.services.tail import BehindGuard, TailService, TailUpdater, answer_etag
from auditlog.services.writer import BatchWriter
from auditlog.storage.events import EventFilter
from auditlog.storage.tail import CacheUnavailable, TailCache, TailSlice
from tests.unit.services.test_writer import FakeStore as WriterStore
from tests.unit.services.test_writer import FakeStream


def doc(seq: int) -> dict[str, Any]:
    return {"id": f"id-{seq}", "seq": seq, "type": "t", "service": "s"}


class FakeCache:
    size = 10

    def __init__(self, slice_: TailSlice | None = None, *, down: bool = False):
        self.slice = slice_
        self.down = down
        self.calls = 0

    def _answer(self) -> TailSlice | None:
        self.calls += 1
        if self.down:
            raise CacheUnavailable("connection refused")
        return self.slice

    async def newest(self, service: str | None, **kwargs: Any) -> TailSlice | None:
        return self._answer()

    async def after(self, service: str | None, after: int, **kwargs: Any) -> TailSlice | None:
        return self._answer()

    async def head(self) -> int | None:
        self._answer()
        return None if self.slice is None else self.slice.last

    async def close(self) -> None:
        pass


class FakeStore:
    def __init__(self, seqs: list[int]):
        self.seqs = seqs
        self.calls: list[str] = []

    async def newest(self, flt: EventFilter, *, limit: int) -> list[dict[str, Any]]:
        self.calls.append("newest")
        return [doc(s) for s in sorted(self.seqs, reverse=True)[:limit]]

    async def after(self, seq: int, flt: EventFilter, *, limit: int) -> list[dict[str, Any]]:
        self.calls.append(f"after {seq}")
        return [doc(s) for s in sorted(self.seqs) if s > seq][:limit]

    async def next_seq(self) -> int:
        return max(self.seqs) + 1

    async def get(self, event_id: Any) -> dict[str, Any] | None:
        return None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.now += seconds


async def allowed() -> bool:
    return True


def cached(*seqs: int, first: int = 5, last: int = 20, trimmed: int = -1, exhausted: bool = False):
    return TailSlice(first, last, trimmed, exhausted, [(s, orjson.dumps(doc(s))) for s in seqs])


def service(cache: FakeCache, store: FakeStore, clock: Clock | None = None, **kw: Any):
    clock = clock or Clock()
    options = {
        "size": cache.size,
        "follow_max_s": 10.0,
        "follow_max_per_process": 1,
        "follow_max_per_key": 1,
        "follow_poll_s": 1.0,
        "key_check_s": 2.0,
        **kw,
    }
    return TailService(cache, store, clock=clock, sleep=clock.asleep, **options)  # type: ignore[arg-type]


async def follow(tail: TailService, last_event_id: str | None, key: str = "k") -> Any:
    return await tail.follow({}, last_event_id, key=key, still_allowed=allowed)


async def drain(stream: Any) -> list[bytes]:
    return [chunk async for chunk in stream]


class TestWhoAnswers:
    async def test_cache_answers_when_it_has_as_many_as_asked(self):
        store = FakeStore([1, 2, 3])
        answer = await service(FakeCache(cached(20, 19)), store).tail({"limit": "2"})
        assert answer.source == "cache"
        assert [orjson.loads(e)["seq"] for e in answer.events] == [20, 19]
        assert store.calls == []

    async def test_fewer_than_asked_goes_to_the_database(self):
        store = FakeStore([7, 8, 9])
        answer = await service(FakeCache(cached(9, 8, exhausted=True)), store).tail({"limit": "3"})
        assert answer.source == "database"
        assert [orjson.loads(e)["seq"] for e in answer.events] == [9, 8, 7]

    async def test_fewer_is_the_answer_when_the_cache_holds_the_whole_history(self):
        store = FakeStore([0, 1])
        whole = cached(1, 0, first=0, last=1, exhausted=True)
        assert (await service(FakeCache(whole), store).tail({"limit": "5"})).source == "cache"
        trimmed = cached(1, 0, first=0, last=1, exhausted=True, trimmed=0)
        assert (await service(FakeCache(trimmed), store).tail({"limit": "5"})).source == "database"

    async def test_cold_cache_goes_to_the_database(self):
        answer = await service(FakeCache(None), FakeStore([4])).tail({})
        assert answer.source == "database"

    async def test_redis_down_goes_to_the_database_then_pauses(self):
        clock = Clock()
        cache = FakeCache(down=True)
        tail = service(cache, FakeStore([1]), clock)
        assert (await tail.tail({})).source == "database"
        assert (await tail.tail({})).source == "database"
        assert cache.calls == 1  # the second read did not wait on Redis again
        clock.now += 1.5
        cache.down = False
        cache.slice = cached(1, first=0, last=1, exhausted=True)
        assert (await tail.tail({})).source == "cache"

    async def test_same_events_same_etag_whatever_the_source(self):
        store = FakeStore([19, 20])
        hit = await service(FakeCache(cached(20, 19)), store).tail({"limit": "2"})
        miss = await service(FakeCache(None), store).tail({"limit": "2"})
        assert hit.etag == miss.etag == answer_etag([20, 19])
        assert hit.etag != answer_etag([20])

    @pytest.mark.parametrize("limit", ["0", "11", "-1", "1e2"])
    async def test_limit_is_at_most_the_cache_size(self, limit: str):
        with pytest.raises(InvalidQuery, match=r"^limit"):
            await service(FakeCache(None), FakeStore([1])).tail({"limit": limit})


def events_in(chunks: list[bytes]) -> list[int]:
    return [int(line[4:]) for line in b"".join(chunks).split(b"\n") if line.startswith(b"id: ")]


class TestFollow:
    async def test_position_moves_to_the_end_of_what_the_cache_examined(self):
        clock = Clock()
        cache = FakeCache(cached(21, first=0, last=30, exhausted=True))
        store = FakeStore([21])
        stream = await follow(service(cache, store, clock, follow_max_s=2.5), "20")
        chunks = await drain(stream)
        await stream.close()
        assert chunks[0].startswith(b"retry: 1000\nid: 20\n")
        assert b"data: " in chunks[1]
        assert chunks[-1].endswith(b"id: 30\n\n")  # resume after the whole examined range
        assert store.calls == []

    async def test_database_when_the_cache_cannot_vouch(self):
        clock = Clock()
        cache = FakeCache(TailSlice(50, 60, -1, False, []))
        store = FakeStore([41, 42])
        stream = await follow(service(cache, store, clock, follow_max_s=1.5), "40")
        chunks = await drain(stream)
        assert store.calls[0] == "after 40"
        assert events_in(chunks)[1:3] == [41, 42]

    async def test_ends_after_follow_max_s_with_heartbeats(self):
        clock = Clock()
        cache = FakeCache(cached(first=0, last=5, exhausted=True))
        stream = await follow(service(cache, FakeStore([5]), clock, follow_max_s=40), None)
        chunks = await drain(stream)
        assert chunks[0].startswith(b"retry: 1000\nid: 5\n")
        assert sum(b"still following" in c for c in chunks) == 2  # every 15 s
        assert b"time limit reached" in chunks[-1]
        assert clock.now == pytest.approx(1040.0)

    async def test_followers_are_bounded_and_given_back_on_close(self):
        tail = service(FakeCache(None), FakeStore([1]))
        first = await follow(tail, "0")
        with pytest.raises(Overloaded):
            await follow(tail, "0")
        await first.close()  # never iterated: closing alone gives the slot back
        assert tail.followers == 0
        await (await follow(tail, "0")).close()

    async def test_bad_last_event_id(self):
        tail = service(FakeCache(None), FakeStore([1]))
        with pytest.raises(InvalidQuery, match=r"^Last-Event-ID"):
            await follow(tail, "not-an-id")
        assert tail.followers == 0


class TestBehindGuard:
    async def test_cache_behind_the_database_is_not_trusted_until_it_catches_up(self):
        clock = Clock()
        database = {"last": 10}

        async def last() -> int:
            return database["last"]

        guard = BehindGuard(last, clock)
        assert not await guard.behind(10)
        database["last"] = 12  # a batch committed; its hook never runs
        assert not await guard.behind(10)  # not checked again within the second...
        clock.now += 1.0
        assert await guard.behind(10)  # ...but at the next check
        clock.now += 0.1
        assert await guard.behind(10)  # and until the cache has caught up
        assert not await guard.behind(13)

    async def test_database_down_does_not_make_the_cache_behind(self):
        async def down() -> int:
            raise Unavailable("no database")

        assert not await BehindGuard(down, Clock()).behind(5)

    async def test_tail_reads_the_database_while_the_cache_is_behind(self):
        store = FakeStore([19, 20, 21])
        cache = FakeCache(cached(20, 19))
        answer = await service(cache, store).tail({"limit": "2"})
        assert answer.source == "database"
        assert [orjson.loads(e)["seq"] for e in answer.events] == [21, 20]


class TestFollowThroughOutages:
    async def test_a_round_nobody_answers_does_not_cut_the_stream(self):
        clock = Clock()

        class FlakyStore(FakeStore):
            async def after(
                self, seq: int, flt: EventFilter, *, limit: int
            ) -> list[dict[str, Any]]:
                if len(self.calls) < 2:
                    self.calls.append("down")
                    raise Unavailable("no database")
                return await super().after(seq, flt, limit=limit)

        store = FlakyStore([8, 9])
        stream = await follow(service(FakeCache(down=True), store, clock, follow_max_s=5), "7")
        assert events_in(await drain(stream))[1:3] == [8, 9]


class TestTailUpdater:
    def test_a_cache_that_fails_is_counted_and_writing_goes_on(self):
        class DownCache(TailCache):
            def __init__(self) -> None:
                pass

            def record(self, stored: Any) -> None:
                raise CacheUnavailable("connection refused")

        def failures() -> float:
            return REGISTRY.get_sample_value("auditlog_tail_update_failures_total") or 0.0

        before = failures()
        envelope = {"occurred_at": "t", "received_at": "t", "outcome": "success"}
        stream = FakeStream([orjson.dumps(doc(n) | envelope) for n in range(3)])
        clock = Clock()
        writer = BatchWriter(
            stream,  # type: ignore[arg-type]
            WriterStore(),  # type: ignore[arg-type]
            batch_max=10,
            block_ms=1,
            claim_idle_ms=1000,
            max_attempts=3,
            clock=clock,
            sleep=clock.sleep,
            on_commit=[TailUpdater(DownCache()).record_batch],
        )

        def one_more_round() -> bool:
            clock.sleep(0.1)
            return True

        report = writer.drain("slot-0", deadline=clock.now + 0.5, keep_going=one_more_round)
        assert report.stored == 3
        assert stream.acked == ["0-0", "1-0", "2-0"]  # committed and acknowledged all the same
        assert failures() == before + 1
