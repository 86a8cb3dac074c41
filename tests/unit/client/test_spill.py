"""The spill file: order, acknowledgement, replay by the next client, a torn last line."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditlog.client._events import Item
from auditlog.client._spill import SpillFile, SpillFileBusy


def item(n: int) -> Item:
    return Item(f"id-{n}", b'{"n":%d}' % n, n)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "spill" / "events"


class TestSpillFile:
    def test_reads_back_in_order_within_the_limits(self, path: Path):
        spill = SpillFile(path, 1 << 20, "run1")
        for n in range(5):
            assert spill.append(item(n)) is None
        first, _ = spill.read(max_events=2, max_bytes=1 << 20)
        assert first == [item(0), item(1)]
        rest, _ = spill.read(max_events=10, max_bytes=14)  # two 7-byte events fit
        assert rest == [item(2), item(3)]
        assert spill.unread
        assert spill.pending
        spill.close()

    def test_one_event_is_read_even_over_max_bytes(self, path: Path):
        spill = SpillFile(path, 1 << 20, "run1")
        spill.append(item(0))
        assert spill.read(10, 1)[0] == [item(0)]
        spill.close()

    def test_empties_once_everything_is_acknowledged(self, path: Path):
        spill = SpillFile(path, 1 << 20, "run1")
        spill.append(item(0))
        spill.append(item(1))
        _, end = spill.read(10, 1 << 20)
        spill.commit(end)
        assert (spill.pending, spill.size, path.stat().st_size) == (False, 0, 0)
        spill.append(item(2))
        assert spill.read(10, 1 << 20)[0] == [item(2)]
        spill.close()

    def test_the_next_client_replays_from_the_last_acknowledged_event(self, path: Path):
        spill = SpillFile(path, 1 << 20, "run1")
        for n in range(4):
            spill.append(item(n))
        _, end = spill.read(2, 1 << 20)
        spill.commit(end)
        spill.read(2, 1 << 20)  # read, never acknowledged: sent again by the next client
        spill.close()
        again = SpillFile(path, 1 << 20, "run2")
        replayed, _ = again.read(10, 1 << 20)
        # Another run's seqs mean nothing here: -1, nobody waits for them.
        assert [(i.id, i.raw, i.seq) for i in replayed] == [
            ("id-2", b'{"n":2}', -1),
            ("id-3", b'{"n":3}', -1),
        ]
        again.close()

    def test_a_torn_last_line_is_cut_off(self, path: Path):
        spill = SpillFile(path, 1 << 20, "run1")
        spill.append(item(0))
        spill.close()
        with path.open("ab") as file:
            file.write(b'run1 1 id-1 {"n"')  # a crash in the middle of a write
        again = SpillFile(path, 1 << 20, "run2")
        assert [i.id for i in again.read(10, 1 << 20)[0]] == ["id-0"]
        again.append(item(2))
        assert [i.id for i in again.read(10, 1 << 20)[0]] == ["id-2"]
        again.close()

    def test_an_unreadable_line_is_skipped_and_logged(
        self, path: Path, caplog: pytest.LogCaptureFixture
    ):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"garbage\nrun0 3 id-3 {}\n")
        spill = SpillFile(path, 1 << 20, "run1")
        assert [i.id for i in spill.read(10, 1 << 20)[0]] == ["id-3"]
        assert "unreadable line at byte 0" in caplog.text
        spill.close()

    def test_refuses_past_its_limit(self, path: Path):
        spill = SpillFile(path, 30, "run1")
        assert spill.append(item(0)) is None
        assert spill.append(item(1)) == "the spill file is at its limit (30 bytes)"
        spill.close()

    def test_one_client_at_a_time(self, path: Path):
        spill = SpillFile(path, 1 << 20, "run1")
        with pytest.raises(SpillFileBusy):
            SpillFile(path, 1 << 20, "run2")
        spill.close()
        SpillFile(path, 1 << 20, "run2").close()
