"""Load generators, process sampling and environment facts for `make bench`."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
AUTOCANNON = BENCH / "node_modules" / ".bin" / "autocannon"
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


def autocannon(
    url: str, body: bytes, *, rate: float, connections: int, seconds: int, headers: dict[str, str]
) -> LoadResult:
    """An open-loop-ish run at a fixed overall rate: latency where the server is not full."""
    command = [
        str(AUTOCANNON),
        "-m",
        "POST",
        "-c",
        str(connections),
        "-d",
        str(seconds),
        "--overallRate",
        str(int(rate)),
        "-j",
        "-b",
        body.decode(),
    ]
    for name, value in headers.items():
        command += ["-H", f"{name}={value}"]
    command.append(url)
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    data = json.loads(out)
    shown = [c if not c.startswith("{") and not c.startswith("[") else "<body>" for c in command]
    shown = [c if not c.startswith("Authorization=") else "Authorization=Bearer …" for c in shown]
    return LoadResult(
        command=shown,
        requests=int(data["requests"]["total"]),
        seconds=float(data["duration"]),
        rate=float(data["requests"]["average"]),
        p50_ms=float(data["latency"]["p50"]),
        p99_ms=float(data["latency"]["p99"]),
        errors=int(data.get("non2xx", 0)) + int(data.get("errors", 0)),
        raw=out,
    )


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
        "nginx": _first_line(["nginx", "-v"]),
        "redis": _first_line(["redis-server", "--version"]),
        "wrk": _first_line(["wrk", "--version"]),
        "autocannon": _first_line([str(AUTOCANNON), "--version"]),
        **database_versions,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
