"""docs/benchmarks.md and its plots from one run's results (bench/results/latest.json).

.venv/bin/python -m bench.report   # re-render from the last results
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]


def _check(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _miss(value: float, target: float, higher_is_better: bool = True) -> str:
    ok = value >= target if higher_is_better else value <= target
    if ok:
        return "met"
    gap = (target - value) / target if higher_is_better else (value - target) / target
    return f"**missed by {gap:.0%}**"


def targets(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(target, figure, ratio or value, verdict) rows."""
    rows = []
    db = r["database_limit"]["copy_dedupe"]
    batch = r["batch_ingest"]["events_per_s"]
    rows.append(
        (
            "batch ingest ≥ 50 % of the database limit",
            f"{batch:,.0f} vs {db:,.0f} events/s",
            f"{batch / db:.0%}",
            _miss(batch / db, 0.5),
        )
    )
    single = r["single_ingest"]["saturated"]["rate"]
    peer = r["naive_peer"]["rate"]
    http = r["http_limit"]["rate"]
    rows.append(
        (
            "single-event ingest ≥ 2× the naive peer",
            f"{single:,.0f} vs {peer:,.0f} requests/s",
            f"{single / peer:.2f}×",
            _miss(single / peer, 2.0),
        )
    )
    rows.append(
        (
            "single-event ingest ≥ 60 % of the HTTP limit",
            f"{single:,.0f} vs {http:,.0f} requests/s",
            f"{single / http:.0%}",
            _miss(single / http, 0.6),
        )
    )
    half = r["single_ingest"]["half_load"]
    rows.append(
        (
            "p99 of the 202 ≤ 25 ms at half load",
            f"{half['p99_ms']:.1f} ms",
            f"at {half['rate']:,.0f} requests/s",
            _miss(half["p99_ms"], 25, False),
        )
    )
    lag = r["lag"]
    rows.append(
        (
            "lag p99 ≤ 1 s at half load",
            f"{lag['p99_ms']:.0f} ms",
            f"p50 {lag['p50_ms']:.0f} ms",
            _miss(lag["p99_ms"], 1000, False),
        )
    )
    q = r["queries"]
    size = r["large_log"]["events"]
    rows.append(
        (
            f"get-by-id p99 ≤ 10 ms ({size:,} events)",
            f"{q['get_by_id']['p99_ms']:.1f} ms",
            f"p50 {q['get_by_id']['p50_ms']:.1f} ms"
            + (
                f"; read again: p99 {q['get_by_id_again']['p99_ms']:.1f} ms"
                if "get_by_id_again" in q
                else ""
            ),
            _miss(q["get_by_id"]["p99_ms"], 10, False),
        )
    )
    rows.append(
        (
            "filtered page p99 ≤ 50 ms",
            f"{q['filtered_page']['p99_ms']:.1f} ms",
            f"p50 {q['filtered_page']['p50_ms']:.1f} ms"
            + (
                f"; read again: p99 {q['filtered_page_again']['p99_ms']:.1f} ms"
                if "filtered_page_again" in q
                else ""
            ),
            _miss(q["filtered_page"]["p99_ms"], 50, False),
        )
    )
    first, hundredth = q["first_page"], q["page_100"]
    rows.append(
        (
            "the 100th page as fast as the first (within 1.5× + 2 ms, p50 and p99)",
            f"p50 {hundredth['p50_ms']:.1f} vs {first['p50_ms']:.1f} ms; "
            f"p99 {hundredth['p99_ms']:.1f} vs {first['p99_ms']:.1f} ms",
            f"{hundredth['p50_ms'] / first['p50_ms']:.2f}× (p50)",
            _check(all(hundredth[p] <= first[p] * 1.5 + 2 for p in ("p50_ms", "p99_ms"))),
        )
    )
    b = q["buckets_30d_hourly_by_type"]
    rows.append(
        (
            "30 days of hourly buckets ≤ 500 ms",
            f"{b['p99_ms']:.1f} ms (p99)",
            f"p50 {b['p50_ms']:.1f} ms",
            _miss(b["p99_ms"], 500, False),
        )
    )
    f = r["footprint"]
    rows.append(
        (
            "disk per event ≤ 2.5× its JSON size",
            f"{f['bytes_per_event']:,.0f} vs {f['json_bytes_per_event']:,.0f} bytes",
            f"{f['ratio']:.2f}×",
            _miss(f["ratio"], 2.5, False),
        )
    )
    rss = max(r["rss_after_ingest"]["api_worker"], r["rss_after_queries"]["api_worker"])
    rows.append(
        ("API worker RSS ≤ 150 MB", f"{rss:.0f} MiB", "peak (VmHWM)", _miss(rss, 150, False))
    )
    s = r["soak"]
    growth = s["pool_rss_last_mib"] - s["pool_rss_first_mib"]
    rows.append(
        (
            f"worker RSS flat over a {s['seconds'] // 60}-minute soak",
            f"{s['pool_rss_first_mib']:.0f} → {s['pool_rss_last_mib']:.0f} MiB",
            f"{growth:+.1f} MiB",
            _check(abs(growth) < 10),
        )
    )
    return rows


def _plots(r: dict[str, Any], out: Path) -> list[str]:
    import matplotlib  # noqa: PLC0415 - only the report needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    out.mkdir(parents=True, exist_ok=True)
    names = []

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    bars = {
        "database limit\n(COPY + dedupe)": r["database_limit"]["copy_dedupe"],
        "writer transaction\n(+ tree, head, counts)": r["database_limit"]["writer_transaction"],
        "auditlog end to end\n(HTTP → commit)": r["batch_ingest"]["events_per_s"],
    }
    left.bar(list(bars), list(bars.values()), color=["#999", "#69c", "#36c"])
    left.set_title("Batch ingest (events/s)")
    bars = {
        "HTTP limit\n(bare Falcon)": r["http_limit"]["rate"],
        "naive peer\n(Flask, INSERT)": r["naive_peer"]["rate"],
        "auditlog": r["single_ingest"]["saturated"]["rate"],
    }
    right.bar(list(bars), list(bars.values()), color=["#999", "#c66", "#36c"])
    right.set_title("Single-event ingest (requests/s)")
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    plt.close(fig)
    names.append("throughput.png")

    fig, ax = plt.subplots(figsize=(8, 4))
    q = r["queries"]
    labels = list(q)
    ax.bar(
        [x - 0.2 for x in range(len(labels))], [q[k]["p50_ms"] for k in labels], 0.4, label="p50"
    )
    ax.bar(
        [x + 0.2 for x in range(len(labels))], [q[k]["p99_ms"] for k in labels], 0.4, label="p99"
    )
    ax.set_xticks(
        range(len(labels)), [k.replace("_", " ") for k in labels], rotation=15, fontsize=8
    )
    ax.set_ylabel("ms")
    ax.set_title(f"Queries through nginx on {r['large_log']['events']:,} events")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "queries.png", dpi=110)
    plt.close(fig)
    names.append("queries.png")

    fig, ax = plt.subplots(figsize=(8, 3.5))
    samples = r["soak"]["samples"]
    ax.plot([s[0] for s in samples], [s[2] for s in samples], label="pool process")
    ax.plot([s[0] for s in samples], [s[1] for s in samples], label="main process")
    ax.set_xlabel("s")
    ax.set_ylabel("RSS (MiB)")
    ax.set_ylim(bottom=0)
    ax.set_title("Celery worker memory under steady load")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "soak.png", dpi=110)
    plt.close(fig)
    names.append("soak.png")
    return names


API = "API (gunicorn)"


def _by_share(profile: dict[str, float]) -> dict[str, float]:
    return dict(sorted(profile.items(), key=lambda kv: -kv[1]))


BACKEND = ("Redis", "writer (Celery)", "PostgreSQL")


def _analysis(r: dict[str, Any]) -> list[str]:
    """What bounds single-event ingest, in this run's own figures."""
    ours = r["single_ingest"]["saturated"].get("cpu_us_per_request")
    bare = r["http_limit"].get("cpu_us_per_request")
    peer = r["naive_peer"].get("cpu_us_per_request")
    if not (ours and bare and peer):
        return []
    profile = _by_share(r["single_ingest"]["saturated"].get("profile", {}))
    backend = sum(ours.get(k, 0) for k in BACKEND)
    top = ", ".join(f"{part} {share:.0%}" for part, share in list(profile.items())[:4])
    single = r["single_ingest"]["saturated"]["rate"]
    return [
        "",
        "## What bounds single-event ingest",
        "",
        f"Both cores are busy at saturation, so a run's rate is set by the CPU it spends per "
        f"request (table above). The bare app's gunicorn workers spend {bare.get(API, 0):,} µs "
        f"a request; auditlog's spend {ours.get(API, 0):,} µs: parsing and checking the event, "
        f"the key, the Redis round trip, the log line and the metrics, all in Python, under "
        f"the GIL, in threads that hand the GIL over at every wait. Behind the API, Redis, "
        f"the writer and PostgreSQL together spend {backend:,} µs an event, against "
        f"{peer.get('PostgreSQL', 0):,} µs in PostgreSQL alone for the naive peer's one "
        f"INSERT; the naive peer's own workers spend {peer.get(API, 0):,} µs, doing less "
        f"than ours (no validation, no key, no log line, no metrics). The profile of one API "
        f"worker ({top}) has no single hot spot left to remove: its largest part is gunicorn's "
        f"own request handling, which the bare app pays too.",
        "",
        "So the bound is the API tier's Python CPU per request, not the writer and not the "
        "database: batches of 500 reach "
        f"{r['batch_ingest']['events_per_s']:,.0f} events/s on the same machine "
        f"({r['batch_ingest']['events_per_s'] / max(single, 1):.0f}× the single-event rate), "
        "because the per-request cost is paid once per 500 events. What was done about it: "
        "concurrent POSTs of one process share one Redis script call (group commit), the "
        "writer lingers after a short read so that single events are written in batches of "
        "hundreds instead of a few (before that change the writer and PostgreSQL spent about "
        "three times as much per event), one Redis round trip per request at most, logs "
        "rendered straight to bytes. What would lift it further: the API tier is stateless, "
        "so more cores or more hosts behind nginx scale it linearly (the writer and "
        "PostgreSQL have room: see the batch figures); producers that can batch should (a "
        "client library that buffers for a few milliseconds would give single-event "
        "producers the batch path's cost).",
    ]


def _query_analysis(r: dict[str, Any]) -> list[str]:
    """The reads' latencies at the client and in the app, first and second time."""
    q, server = r["queries"], r.get("queries_server")
    if not server or "get_by_id_again" not in q:
        return []
    rows = {
        "get-by-id, events not read before": ("get_by_id", "get_by_id"),
        "get-by-id, the same events again": ("get_by_id_again", "get_by_id_again"),
        "filtered page, all": ("filtered_page", "filtered_page"),
        "filtered page, after the first 20": ("filtered_page_again", None),
    }
    lines = [
        "",
        "## Reads on the large log",
        "",
        "The same requests timed by the client (through nginx, Python's requests) and by the "
        "app itself (its `request` log line, found by the request id each query sent). The "
        "filtered pages cycle through 20 (service, day) pairs, so the first 20 are the first "
        "reads of their pages.",
        "",
        "| read | client p50 / p99 (ms) | app p50 / p99 (ms) |",
        "|---|---|---|",
    ]
    for label, (client_key, server_key) in rows.items():
        c = q[client_key]
        s = server.get(server_key, {}) if server_key else {}
        app = f"{s['p50_ms']:.1f} / {s['p99_ms']:.1f}" if s.get("n") else "-"
        lines.append(f"| {label} | {c['p50_ms']:.1f} / {c['p99_ms']:.1f} | {app} |")
    size_gib = r["footprint"]["bytes_per_event"] * r["footprint"]["events"] / 2**30
    lines += [
        "",
        f"The log takes {size_gib:.0f} GiB on disk against PostgreSQL's "
        f"{r['environment'].get('shared_buffers', '?')} of buffers (the machine's default). "
        "In the database a get-by-id is two index lookups, the id ledger then the event's "
        "one chunk (about 1 ms even from disk, by EXPLAIN ANALYZE when the indexes were "
        "designed, not measured in this run); in the app a read also "
        "checks the key, spends its rate-limit token and queues its own audit record (a Redis "
        "round trip each), and everything shares the two cores with the writer. A filtered "
        "page reads its rows in (occurred_at, seq) order from the service index, which also "
        "holds type, action and outcome, so rows of other types are passed over in the index "
        "(before migration 0005, a page matching few rows read the service's whole day from "
        "the table: p99 2.0 s on 10 million events).",
    ]
    return lines


def _cpu_section(r: dict[str, Any]) -> list[str]:
    """Where the two cores went, per request, for each single-event run; and the profile."""
    runs = {
        "bare Falcon (HTTP limit)": r["http_limit"].get("cpu_us_per_request"),
        "naive peer (Flask + INSERT)": r["naive_peer"].get("cpu_us_per_request"),
        "auditlog, single events": r["single_ingest"]["saturated"].get("cpu_us_per_request"),
        "auditlog, batches of 500 (per event)": r["batch_ingest"].get("cpu_us_per_event"),
    }
    runs = {name: cpu for name, cpu in runs.items() if cpu}
    if not runs:
        return []
    kinds = sorted({k for cpu in runs.values() for k in cpu}, key=lambda k: (k == "other", k))
    lines = [
        "",
        "## Where the CPU goes",
        "",
        "CPU time (user + system, µs) that each kind of process spent per request while wrk "
        "saturated the service, read from /proc before and after; for the batch run, per "
        "event, to the last commit. Two cores give 2,000,000 µs a second: a run's rate is "
        "about 2,000,000 / its total.",
        "",
        "| run | " + " | ".join(kinds) + " | total |",
        "|---|" + "---|" * (len(kinds) + 1),
    ]
    for name, cpu in runs.items():
        cells = [f"{cpu.get(k, 0):,}" for k in kinds]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {sum(cpu.values()):,} |")
    profile = _by_share(r["single_ingest"]["saturated"].get("profile", {}))
    if profile:
        lines += [
            "",
            "One API worker's Python time during that run (py-spy, samples taken while it "
            "held the GIL, by the innermost frame of a known part):",
            "",
            "| part | share |",
            "|---|---|",
            *(f"| {part} | {share:.0%} |" for part, share in profile.items()),
        ]
    return lines


def write(r: dict[str, Any], docs: Path) -> None:
    plots = _plots(r, docs / "benchmarks")
    env = r["environment"]
    lines = [
        "# Benchmarks",
        "",
        f"One run of `make bench` ({r['started'][:19]} to {r['finished'][:19]} UTC). Every "
        "figure below comes from that run; the raw data is `bench/results/latest.json`. The "
        f"servers (PostgreSQL, Redis, nginx, two gunicorn instances, the Celery worker) and "
        f"the load generators all share the same {env['cores']} cores, unpinned: the "
        "ratios are the result, the absolute numbers are context.",
        "",
        "## Targets",
        "",
        "| target | figures | ratio | verdict |",
        "|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in targets(r)]
    db = r["database_limit"]
    lines += [
        "",
        *(f"![{name}](benchmarks/{name})" for name in plots),
        "",
        "## What was measured",
        "",
        "| # | what | how | result |",
        "|---|---|---|---|",
        f"| 1 | database limit | `EventWriter`-style COPY with dedupe (event_ids) into the same "
        f"hypertable schema, same indexes (migrated databases of their own, starting empty, "
        f"so that the three variants take turns on equal terms; the end-to-end run 4 writes "
        f"into the 10-million-event log, so its ratio to this limit is if anything "
        f"pessimistic), {db['events']:,} events in batches of 2,000, one "
        f"connection, no HTTP, no queue | {db['copy_dedupe']:,.0f} events/s; with the "
        f"writer's whole transaction (leaf hashes, tree, signed head, hourly counts) "
        f"{db['writer_transaction']:,.0f} events/s, against {db['writer_without_chain']:,.0f} "
        f"for the same transaction without the chain (the chain costs "
        f"{1 - db['chain_ratio']:.0%}) |",
        f"| 2 | HTTP limit | `bench/bare_app.py` (Falcon, 202), same gunicorn config, same "
        f"nginx | {r['http_limit']['rate']:,.0f} requests/s, p99 {r['http_limit']['p99_ms']:.1f}"
        " ms |",
        f"| 3 | naive peer | `bench/naive_peer.py` (Flask, one INSERT per request, autocommit) | "
        f"{r['naive_peer']['rate']:,.0f} requests/s, p99 {r['naive_peer']['p99_ms']:.1f} ms |",
        f"| 4 | batch ingest | arrays of 500 through nginx, 4 connections, "
        f"{r['batch_ingest']['seconds']:.0f} s, counted to the last row committed | "
        f"{r['batch_ingest']['events_per_s']:,.0f} events/s "
        f"({r['batch_ingest']['events_accepted']:,} events) |",
        f"| 5 | single-event ingest | wrk, 32 connections (saturation), then hey at half of "
        f"it (8 connections) | {r['single_ingest']['saturated']['rate']:,.0f} requests/s; at "
        f"{r['single_ingest']['half_load']['rate']:,.0f}/s the 202 takes p50 "
        f"{r['single_ingest']['half_load']['p50_ms']:.1f} ms, p99 "
        f"{r['single_ingest']['half_load']['p99_ms']:.1f} ms at the client (nginx's own "
        f"request time: p50 {r['single_ingest']['half_load_nginx']['p50_ms']:.1f} ms, p99 "
        f"{r['single_ingest']['half_load_nginx']['p99_ms']:.1f} ms) |",
        f"| 6 | lag | a probe posts an event every 100 ms during the half-load run and polls "
        f"the database for it | p50 {r['lag']['p50_ms']:.0f} ms, p99 {r['lag']['p99_ms']:.0f} "
        f"ms ({r['lag']['samples']} probes) |",
    ]
    q = r["queries"]
    lines += [
        f"| 7 | queries | {r['large_log']['events']:,} events loaded by SQL (`bench/loader.py`), "
        "then through nginx: get-by-id, a page filtered by service + type prefix + one day, "
        "the 1st and 100th page of a cursor walk, 30 days of hourly buckets by type | "
        + "; ".join(
            f"{k.replace('_', ' ')} p50 {v['p50_ms']:.1f} / p99 {v['p99_ms']:.1f} ms"
            for k, v in q.items()
        )
        + " |",
        f"| 8 | footprint | table + indexes of events, event_ids, merkle_nodes, tree_heads over "
        f"the events; JSON = the API's answer for a sample | "
        f"{r['footprint']['bytes_per_event']:,.0f} bytes/event vs "
        f"{r['footprint']['json_bytes_per_event']:,.0f} bytes of JSON "
        f"({r['footprint']['ratio']:.2f}×) |",
        "",
        "Peak RSS (MiB, VmHWM) of each kind of process:",
        "",
        "| process | after ingest | after queries |",
        "|---|---|---|",
    ]
    for kind in r["rss_after_ingest"]:
        lines.append(
            f"| {kind} | {r['rss_after_ingest'][kind]} | {r['rss_after_queries'].get(kind, '-')} |"
        )
    if "strict_ack" in r:
        lines += [
            "",
            "Strict acknowledgement (`AUDITLOG_ACK_FSYNC`), single events, stream in a Redis of "
            "its own with its append-only file:",
            "",
            "| Redis | saturation | vs the main run (appendonly no) | 202 at half load "
            "(p50 / p99) |",
            "|---|---|---|---|",
        ]
        labels = {
            "aof_everysec": "appendonly yes, appendfsync everysec (compose)",
            "ack_fsync_always": "appendfsync always + AUDITLOG_ACK_FSYNC=true",
        }
        main = r["single_ingest"]["saturated"]["rate"]
        for name, figures in r["strict_ack"].items():
            rate = figures["saturated"]["rate"]
            lines.append(
                f"| {labels.get(name, name)} | {rate:,.0f} requests/s | {rate / main:.0%} | "
                f"{figures['half_load']['p50_ms']:.1f} / {figures['half_load']['p99_ms']:.1f} ms |"
            )
    lines += _cpu_section(r)
    lines += _analysis(r)
    lines += _query_analysis(r)
    lines += [
        "",
        "## Commands",
        "",
        "```",
        " ".join(r["http_limit"]["command"]),
        " ".join(r["batch_ingest"]["command"]),
        " ".join(r["single_ingest"]["saturated"]["command"]),
        " ".join(r["single_ingest"]["half_load"]["command"]),
        "py-spy record --gil --nonblocking -r 250 -d <duration> -f raw -p <one API worker>",
        "```",
        "",
        "The servers: nginx with `deploy/nginx/` rendered by `auditlog nginx-config`; two "
        "`gunicorn -c deploy/gunicorn.conf.py <target>` instances (targets `auditlog.asgi:app`, "
        "`bench.bare_app:app`, `bench.naive_peer:app`); `celery -A auditlog.tasks.worker "
        "worker --concurrency 2`. The naive peer and the bare app run with the same wrk command "
        "as auditlog's saturation run; the strict-acknowledgement runs repeat the saturation "
        "and half-load commands against a `redis-server --appendonly yes` of their own. The "
        "large log is loaded by `bench/loader.py` (COPY, then the hourly counts, VACUUM "
        "ANALYZE, and the tree sealed by the writer's own code). Everything: "
        "`make bench` (`bench/run.py`).",
        "",
        "## Environment",
        "",
        *(f"- {k}: {v}" for k, v in env.items()),
        "",
    ]
    if r.get("notes"):
        lines += ["## Notes", "", *r["notes"], ""]
    (docs / "benchmarks.md").write_text("\n".join(lines))


if __name__ == "__main__":
    results = orjson.loads((ROOT / "bench" / "results" / "latest.json").read_bytes())
    write(results, ROOT / "docs")
    sys.exit(0)
