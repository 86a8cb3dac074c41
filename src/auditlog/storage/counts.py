"""The hourly counts as a read sees them: complete blocks' rows, and the open block's.

`event_counts` is append-only (integrity/counts.py has the shape): every row ever written
stays, so the rows of several levels count the same events. A read takes, from the top
level down, each level's rows up to where the level above has none yet: level-16 rows of
every complete block of 65,536 seqs, level-12 rows of the open level-16 block, level-0 rows
of the open level-12 block (at most 4,095 events' batches).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, Subquery, func, select, union_all

from auditlog.integrity.counts import ROLLUP_LEVELS
from auditlog.storage.schema import event_counts

# TODO(scale): the top level is 2^16 seqs: a month's read sums each block's rows (a
# block's cells: a few hours of traffic), so on a log of billions of events it is hundreds
# of thousands of rows; add a level 20 (appended as the sum of 16 level-16 blocks) when a
# month's read passes ~100 ms.
CELL_COLUMNS = ("hour", "service", "type", "action", "outcome", "publisher", "n")


def open_starts() -> Select[Any]:
    """Where the first block without a row starts, for each rollup level (one statement,
    one snapshot). Read first, as constants for `live_counts`: as subqueries the planner
    cannot tell that few rows lie past them, and scans the whole table."""
    c = event_counts.c
    return select(
        *(
            select(func.coalesce(func.max(c.seq_lo) + (1 << level), 0))
            .where(c.level == level)
            .scalar_subquery()
            for level in ROLLUP_LEVELS
        )
    )


def live_counts(starts: Sequence[int]) -> Subquery:
    """(hour, service, type, action, outcome, publisher, n) rows that sum to the counts of
    every stored event, given `open_starts()` (one per rollup level, ascending).

    Right whatever was committed since the starts were read: a block completed meanwhile is
    counted from the rows of the level below it, its own new rows left out; nothing twice,
    nothing missed. Conditions on the result reach every part (PostgreSQL pushes them into
    a UNION ALL), so each is one index range: by hour for the top level (index-only), by
    where they start for the others.
    """
    c = event_counts.c
    columns = [c[name] for name in CELL_COLUMNS]
    parts = []
    above = 0  # where the level above stops having rows: this level takes over
    for level, start in zip((*ROLLUP_LEVELS[::-1], 0), (*starts[::-1], None), strict=True):
        where: list[ColumnElement[bool]] = [c.level == level]
        if level != ROLLUP_LEVELS[-1]:
            where.append(c.seq_lo >= above)
        if start is not None:
            where.append(c.seq_lo < start)
            above = start
        parts.append(select(*columns).where(*where))
    return union_all(*parts).subquery("live_counts")
