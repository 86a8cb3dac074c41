"""Load generators, process sampling and environment facts for `make bench`."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


@dataclass
class LoadResult:
    """What a load generator saw: the command, requests, rate and latency (ms)."""

    command: list[str]
    requests: int
    seconds: float
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int
    raw: str = field(repr=False, default="")

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "raw"}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not match:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match[1]) * _UNITS[match[2]]


def wrk(
    url: str, body: bytes, *, connections: int, seconds: int, headers: dict[str, str]
) -> LoadResult:
    """A closed-loop run of wrk (POST of `body`), as many requests as the server takes."""
    workdir = Path(tempfile.mkdtemp(prefix="auditlog-wrk-"))
    body_file = workdir / "body.json"
    body_file.write_bytes(body)
    script = workdir / "post.lua"
    lines = [
        'wrk.method = "POST"',
        f'local f = io.open("{body_file}", "rb")',
        "wrk.body = f:read('*a')",
        "f:close()",
    ]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    script.write_text("\n".join(lines) + "\n")
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    shutil.rmtree(workdir, ignore_errors=True)
    requests = int(re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)[1])  # type: ignore[index]
    duration = re.search(r"requests in ([\d.]+\w+)", out)[1]  # type: ignore[index]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), "
        r"timeout (\d+)",
        out,
    )
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    return LoadResult(
        command=[c if c != str(script) else "post.lua" for c in command],
        requests=requests,
        seconds=_ms(duration) / 1000,
        rate=float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),  # type: ignore[index]
        p50_ms=_ms(lat["50"]),
        p99_ms=_ms(lat["99"]),
        errors=(int(errors[1]) if errors else 0)
        + (sum(int(x) for x in socket_errors.groups()) if socket_errors else 0),
        raw=out,
    )


def hey(
    url: str, body: bytes, *, rate: float, connections: int, seconds: int, headers: dict[str, str]
) -> LoadResult:
    """A run at a fixed overall rate (rate / connections per connection): latency where the
    server is not full. hey (Go) times each request itself; Node's autocannon, tried first,
    reported p99s of 300-600 ms at half load that nginx's own log did not see (its timers
    ran late on the two shared cores)."""
    workdir = Path(tempfile.mkdtemp(prefix="auditlog-hey-"))
    body_file = workdir / "body.json"
    body_file.write_bytes(body)
    command = [
        "hey",
        "-z",
        f"{seconds}s",
        "-c",
        str(connections),
        "-q",
        f"{rate / connections:.2f}",
        "-m",
        "POST",
        "-T",
        headers.get("Content-Type", "application/json"),
        "-D",
        str(body_file),
    ]
    for name, value in headers.items():
        if name != "Content-Type":
            command += ["-H", f"{name}: {value}"]
    command.append(url)
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    shutil.rmtree(workdir, ignore_errors=True)
    latency = {
        int(pct): float(secs) * 1000
        for pct, secs in re.findall(r"^\s+(\d+)% in ([\d.]+) secs", out, re.M)
    }
    statuses = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    _, _, failed = out.partition("Error distribution:")
    failures = sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]\s", failed, re.M))
    requests = sum(statuses.values())
    shown = [c if not c.startswith("Authorization:") else "Authorization: …" for c in command]
    return LoadResult(
        command=[c if c != str(body_file) else "body.json" for c in shown],
        requests=requests,
        seconds=float(seconds),
        rate=float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),  # type: ignore[index]
        p50_ms=latency[50],
        p99_ms=latency[99],
        errors=requests - statuses.get(202, 0) + failures,
        raw=out,
    )


def nginx_request_times(access_log: Path, offset: int, uri: str) -> list[float]:
    """nginx's own $request_time (ms) of each request for `uri` in the log past `offset`:
    the server's side of what a load generator measured."""
    times = []
    with access_log.open("rb") as log:
        log.seek(offset)
        for line in log:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("uri") == uri:
                times.append(float(entry["request_time"]) * 1000)
    return times


# --- profiles -------------------------------------------------------------------------------
# Where a sample's time goes: the innermost frame that belongs to one of these.
_PROFILE_PARTS = (
    ("(redis/", "redis-py and its socket (the append round trip)"),
    ("(structlog/", "logging (structlog)"),
    ("(prometheus_client/", "metrics (prometheus-client)"),
    ("(pydantic", "envelope validation (pydantic)"),
    ("(auditlog/services/envelope.py", "envelope validation (auditlog)"),
    ("(auditlog/", "auditlog's own code (ingest, auth, middleware)"),
    ("(falcon/", "Falcon"),
    ("(gunicorn/", "gunicorn (HTTP parsing, connections, its threads)"),
)


def start_profile(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy on one process for `seconds`: samples taken while it holds the GIL, i.e. where
    its Python CPU time goes."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    command = [spy, "record", "--gil", "--nonblocking", "-r", "250", "-d", str(seconds)]
    command += ["-f", "raw", "-o", str(out), "-p", str(pid)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def profile_shares(raw: Path) -> dict[str, float]:
    """Share of a py-spy raw profile's samples by part (see _PROFILE_PARTS)."""
    counts: dict[str, int] = {}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        part = "other (threading, the standard library)"
        for frame in reversed(stack.split(";")):
            match = next((name for key, name in _PROFILE_PARTS if key in frame), None)
            if match:
                part = match
                break
        counts[part] = counts.get(part, 0) + int(count)
    total = sum(counts.values()) or 1
    return {part: n / total for part, n in sorted(counts.items(), key=lambda kv: -kv[1])}


# --- processes ------------------------------------------------------------------------------
def children(pid: int) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
    ).stdout
    return [int(p) for p in out.split()]


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB; (0, 0) if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0, 0
    values = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M))
    return int(values.get("VmRSS", 0)), int(values.get("VmHWM", 0))


_TICK = os.sysconf("SC_CLK_TCK")
_KINDS = (
    ("gunicorn", "API (gunicorn)"),
    ("celery", "writer (Celery)"),
    ("postgres", "PostgreSQL"),
    ("redis-server", "Redis"),
    ("nginx", "nginx"),
    ("wrk", "load generator"),
    ("hey", "load generator"),
)


def cpu_by_kind() -> dict[str, float]:
    """CPU seconds (user + system) used so far by every process on the machine, by kind."""
    seconds: dict[str, float] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        used = (int(fields[11]) + int(fields[12])) / _TICK
        kind = next((name for key, name in _KINDS if key in cmdline), "other")
        seconds[kind] = seconds.get(kind, 0.0) + used
    return seconds


def cpu_per_request(before: dict[str, float], after: dict[str, float], requests: int) -> dict:
    """Microseconds of CPU per request, by kind of process, between two cpu_by_kind()."""
    return {
        kind: round((after.get(kind, 0.0) - before.get(kind, 0.0)) / requests * 1e6)
        for kind in after
        if after.get(kind, 0.0) - before.get(kind, 0.0) > 0.01
    }


def peak_rss_mib(pids: list[int]) -> float:
    return max((memory_kib(p)[1] for p in pids), default=0) / 1024


# --- the machine ----------------------------------------------------------------------------
def _first_line(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=10)
    except OSError:
        return "not found"
    return (
        (done.stdout or done.stderr).strip().splitlines()[0]
        if (done.stdout or done.stderr)
        else "unknown"
    )


def _hey_version() -> str:
    """hey has no --version; Debian's package says which it is."""
    version = _first_line(["dpkg-query", "-W", "-f=${Version}", "hey"])
    return f"hey {version} (Debian)" if version not in ("not found", "unknown") else "hey"


PACKAGES = ("falcon", "gunicorn", "celery", "redis", "psycopg", "sqlalchemy", "flask", "orjson")


def package_versions() -> str:
    """The Python packages the servers under test run on, as installed."""
    from importlib import metadata  # noqa: PLC0415

    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def environment(database_versions: dict[str, str]) -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "nginx": _first_line(["nginx", "-v"]),
        "redis": _first_line(["redis-server", "--version"]),
        "wrk": _first_line(["wrk", "--version"]),
        "hey": _hey_version(),
        **database_versions,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
