"""make bench: the log's tiles (C2SP tlog-tiles) served from a large log.

The target (issue 17): tiles of a 1,000,000-event log served at p99 <= 20 ms. `measure`
reads the latest checkpoint's tree size from the API, then times GETs of tiles as a client
computing proofs reads them: random full tiles of every level the tree has, the partial
tiles at its right edge (the ones every proof against the latest checkpoint needs), and
the checkpoint itself. Each answer's length is checked (32 bytes a hash).

Wiring, for bench/run.py (not done here): in `queries`, where nginx serves the large log
(`base`, `run.headers`; the worker publishes a checkpoint within seconds of starting),

    run.results["tiles"] = tiles.measure(base, run.headers, rounds=60 if run.quick else 500)

and a line for report.py: p50 and p99 of `tiles["all"]` against `tiles["target_p99_ms"]`.
Standalone, against any deployment:

    .venv/bin/python bench/tiles.py --url http://127.0.0.1:8080 --token "$TOKEN"
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from auditlog.integrity.checkpoint import SignedCheckpoint
from auditlog.integrity.tiles import HEIGHT, WIDTH, TileRef, available_width

TARGET_P99_MS = 20.0
WARM_UP = 20


def tile_plan(tree_size: int, rounds: int, rng: random.Random) -> list[TileRef]:
    """`rounds` tiles of a tree of `tree_size` leaves: random full tiles of every level it
    has, the right edge's partial tiles in between."""
    levels = [level for level in range(8) if tree_size >> (HEIGHT * level) > 0]
    edge = [
        TileRef(level, index, width)
        for level in levels
        for index in [(tree_size >> (HEIGHT * level)) // WIDTH]
        if 0 < (width := available_width(level, index, tree_size)) < WIDTH
    ]
    plan = []
    for n in range(rounds):
        level = levels[n % len(levels)]
        full_tiles = (tree_size >> (HEIGHT * level)) // WIDTH
        if n % 5 == 4 and edge:
            plan.append(edge[(n // 5) % len(edge)])
        elif full_tiles:
            plan.append(TileRef(level, rng.randrange(full_tiles)))
        else:
            plan.append(edge[n % len(edge)])
    return plan


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": percentile(values, 50),
        "p99_ms": percentile(values, 99),
        "mean_ms": statistics.fmean(values),
    }


def measure(
    base_url: str,
    headers: dict[str, str],
    *,
    rounds: int = 500,
    seed: int = 17,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Time tile GETs against the API at base_url (with a read key in headers, unless the
    deployment serves tiles publicly); the figures, by kind and together."""
    http = requests.Session()
    http.headers.update({k: v for k, v in headers.items() if k.lower() == "authorization"})

    def get(path: str, length: int | None = None) -> float:
        started = time.perf_counter()
        answer = http.get(f"{base_url}/v1/log/{path}", timeout=60)
        elapsed = (time.perf_counter() - started) * 1000
        assert answer.status_code == 200, (path, answer.text[:300])
        assert length is None or len(answer.content) == length, (path, len(answer.content))
        return elapsed

    started = time.perf_counter()
    checkpoint = SignedCheckpoint.parse(
        http.get(f"{base_url}/v1/log/checkpoint", timeout=60).content
    )
    size = checkpoint.checkpoint.tree_size
    plan = tile_plan(size, rounds, random.Random(seed))
    for ref in plan[:WARM_UP]:
        get(ref.path(), ref.width * 32)
    times: dict[str, list[float]] = {"full": [], "partial": [], "checkpoint": []}
    for n, ref in enumerate(plan):
        times["partial" if ref.partial else "full"].append(get(ref.path(), ref.width * 32))
        if n % 10 == 0:
            times["checkpoint"].append(get("checkpoint"))
    every = [t for kind in ("full", "partial") for t in times[kind]]
    result: dict[str, Any] = {
        "tree_size": size,
        "levels": len({ref.level for ref in plan}),
        "all": summary(every),
        **{kind: summary(values) for kind, values in times.items() if values},
        "target_p99_ms": TARGET_P99_MS,
        "met": percentile(every, 99) <= TARGET_P99_MS,
        "seconds": round(time.perf_counter() - started, 1),
    }
    say(
        f"   tiles of a {size:,}-leaf tree: p50 {result['all']['p50_ms']:.1f} ms, "
        f"p99 {result['all']['p99_ms']:.1f} ms (target {TARGET_P99_MS:g} ms"
        f"{'' if result['met'] else ': MISSED'})"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the API (or nginx in front of it)")
    parser.add_argument("--token", help="a read key's token, unless tiles are public")
    parser.add_argument("--rounds", type=int, default=500)
    args = parser.parse_args()
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    print(json.dumps(measure(args.url.rstrip("/"), headers, rounds=args.rounds), indent=2))


if __name__ == "__main__":
    main()
