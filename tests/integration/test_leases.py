"""Writer slot leases on a real Redis: one holder at a time, and retries that are safe."""

from __future__ import annotations

import uuid

import pytest

from auditlog.errors import Unavailable
from auditlog.runtime import redis_client
from auditlog.settings import Settings
from auditlog.storage.leases import SlotLeases
from tests.topology import free_port


@pytest.fixture
def leases(settings: Settings) -> SlotLeases:
    own = settings.model_copy(
        update={"redis_prefix": f"{settings.redis_prefix}-{uuid.uuid4().hex[:6]}"}
    )
    return SlotLeases(redis_client(own, "writer"), own.key("writer", "slot"), ttl_s=5)


class TestSlotLeases:
    def test_one_holder_at_a_time(self, leases: SlotLeases):
        assert leases.acquire_free(0, "a")
        assert not leases.acquire_free(0, "b")
        assert not leases.acquire(0, "b")
        assert leases.acquire(0, "a")  # a redelivery of the holder's task resumes
        assert leases.renew(0, "a")
        assert not leases.renew(0, "b")

    def test_handover_asked_again_after_a_lost_reply_still_says_yes(self, leases: SlotLeases):
        assert leases.acquire_free(1, "a")
        assert leases.handover(1, "a", "b")
        assert leases.handover(1, "a", "b")  # the retry of a handover whose reply was lost
        assert not leases.handover(1, "a", "c")
        assert not leases.renew(1, "a")
        assert leases.renew(1, "b")
        assert leases.release(1, "b")
        assert leases.acquire_free(1, "c")

    def test_redis_not_answering_is_unavailable(self, settings: Settings):
        gone = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
        leases = SlotLeases(redis_client(gone, "writer"), gone.key("writer", "slot"), ttl_s=5)
        with pytest.raises(Unavailable):
            leases.renew(0, "a")
