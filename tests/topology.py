"""The production topology for end-to-end tests: nginx, gunicorn instances, Flower, on free
ephemeral ports, configured from the files `make run` uses (deploy/)."""

from __future__ import annotations

import abc
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import falcon
import orjson
import requests
from prometheus_client.parser import text_string_to_metric_families

from auditlog.nginx import Topology, write_config
from auditlog.settings import Settings
from tests.helpers import ROOT, settings_env, wait_for

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
APP = "auditlog.asgi:app"


def free_port() -> int:
    """A port nobody listens on now (the kernel's pick; used within seconds)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def world_readable_dir(prefix: str) -> Path:
    """A directory nginx's workers (user nobody when the master is root) can enter."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def json_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for raw in path.read_text(errors="replace").splitlines():
        start = raw.find("{")
        if start < 0:
            continue
        try:
            lines.append(json.loads(raw[start:]))
        except ValueError:
            continue
    return lines


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page, parsed by prometheus-client's own parser."""
    answer = requests.get(url, timeout=10)
    assert answer.status_code == 200, answer.text
    samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str):
    """The sum of a metric's samples whose labels include the given ones."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


@dataclass(frozen=True)
class Answer:
    """One HTTP answer, read from a raw socket."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def exchange(
    address: str,
    method: str,
    target: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    *,
    version: str = "HTTP/1.1",
    timeout: float = 10.0,
) -> Answer:
    """Send one request byte for byte (the target as written, latin-1: nothing normalised,
    nothing escaped, unlike requests or urllib3) on a connection of its own."""
    headers = {"Host": "auditlog", "Connection": "close", **(headers or {})}
    lines = [f"{method} {target} {version}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head + body)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        return Answer(response.status, response.msg, response.read())


class HttpResult:
    """An answer over HTTP, read the way falcon.testing.Result is (status_code, headers,
    json, text, content), so that one test can run in-process and through a server."""

    def __init__(self, answer: Answer):
        self.status_code = answer.status
        self.headers = {name.lower(): value for name, value in answer.headers.items()}
        self.content = answer.body
        self.text = answer.body.decode("utf-8", errors="replace")

    @property
    def json(self) -> Any:
        return orjson.loads(self.content) if self.content else None


class HttpClient:
    """The part of falcon.testing.TestClient the edge tests use, over real HTTP: requests
    go to `address` byte for byte (see `exchange`) with the client's default headers."""

    def __init__(self, address: str, headers: dict[str, str] | None = None):
        self.address = address
        self.headers = headers or {}

    def simulate_request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        query_string: str | None = None,
        headers: dict[str, str] | None = None,
        body: str | bytes | None = None,
        extras: dict[str, str] | None = None,
    ) -> HttpResult:
        if extras and "PATH_INFO" in extras:
            # What a WSGI server makes of a percent-escaped path: send the escapes instead.
            path = urllib.parse.quote(extras["PATH_INFO"].encode("latin-1"), safe="/")
        if query_string is None and params:
            query_string = falcon.to_query_str(params, comma_delimited_lists=False, prefix=False)
        target = f"{path}?{query_string}" if query_string else path
        data = body.encode() if isinstance(body, str) else body or b""
        answer = exchange(self.address, method, target, {**self.headers, **(headers or {})}, data)
        return HttpResult(answer)

    def simulate_get(self, path: str, **kwargs: Any) -> HttpResult:
        return self.simulate_request("GET", path, **kwargs)

    def simulate_post(self, path: str, **kwargs: Any) -> HttpResult:
        return self.simulate_request("POST", path, **kwargs)


class Service(abc.ABC):
    """A server process in its own process group, its output in one log file."""

    name = "service"

    def __init__(self, log_path: Path):
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @abc.abstractmethod
    def command(self) -> list[str]:
        """The program and its arguments."""

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    @abc.abstractmethod
    def ready(self) -> bool:
        """Whether the started process serves yet."""

    def start(self) -> Service:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                env=self.environment(),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(self._ready, timeout=30, what=f"{self.name} ready (log {self.log_path})")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
        try:
            return self.ready()
        except requests.RequestException:
            return False

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL the whole process group: no goodbye, no cleanup. Returns once every
        process of the group is gone (their sockets closed), not only the leader."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

        def gone() -> bool:
            try:
                os.killpg(self.proc.pid, 0)  # type: ignore[union-attr]
            except ProcessLookupError:
                return True
            return False

        wait_for(gone, timeout=10, interval=0.01, what="the killed process group gone")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


class ApiInstance(Service):
    """One gunicorn instance of the API, with deploy/gunicorn.conf.py."""

    def __init__(
        self,
        settings: Settings,
        log_dir: Path,
        name: str,
        *,
        workers: int = 2,
        threads: int | None = None,
    ):
        super().__init__(log_dir / f"{name}-{settings.redis_prefix}.log")
        self.name = name
        self.settings = settings
        self.workers = workers
        self.threads = threads
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.metrics_dir = log_dir / f"metrics-{name}-{settings.redis_prefix}"

    def command(self) -> list[str]:
        config = str(ROOT / "deploy" / "gunicorn.conf.py")
        return [sys.executable, "-m", "gunicorn", "-c", config, "-b", self.address, APP]

    def environment(self) -> dict[str, str]:
        return {
            **settings_env(self.settings),
            "GUNICORN_WORKERS": str(self.workers),
            **({"GUNICORN_THREADS": str(self.threads)} if self.threads else {}),
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
        }

    def start(self) -> Service:
        self.metrics_dir.mkdir(exist_ok=True)
        return super().start()

    def ready(self) -> bool:
        return requests.get(f"http://{self.address}/healthz", timeout=2).status_code == 200

    def url(self, path: str) -> str:
        return f"http://{self.address}{path}"


class FlowerProcess(Service):
    """Flower with deploy/flowerconfig.py (basic auth, /flower/ prefix)."""

    name = "flower"

    def __init__(self, settings: Settings, log_dir: Path):
        super().__init__(log_dir / f"flower-{settings.redis_prefix}.log")
        self.settings = settings
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "auditlog.tasks.worker",
            "flower",
            f"--conf={ROOT / 'deploy' / 'flowerconfig.py'}",
            "--address=127.0.0.1",
            f"--port={self.port}",
        ]

    def environment(self) -> dict[str, str]:
        return settings_env(self.settings)

    @property
    def auth(self) -> tuple[str, str]:
        return (self.settings.flower_user, self.settings.flower_password)

    def ready(self) -> bool:
        return requests.get(
            f"http://{self.address}/flower/healthcheck", auth=self.auth, timeout=2
        ).ok


# Every client of a test topology is 127.0.0.1, and make bench drives thousands of requests
# per second from it: the per-address limits are lifted unless a test sets its own
# (tests/integration/test_front_door.py does; make run keeps the defaults). One worker, as
# before the knob existed: several test topologies share two cores, and the bench's figures
# were measured with one.
TEST_KNOBS = {
    "WORKER_PROCESSES": "1",
    "CONNECTIONS_PER_ADDRESS": "60000",
    "RATE_PER_ADDRESS": "1000000r/s",
    "BURST_PER_ADDRESS": "1000000",
}


class NginxProcess(Service):
    """nginx in the foreground with deploy/nginx/, rendered for these ports."""

    name = "nginx"

    def __init__(
        self,
        settings: Settings,
        apis: list[str],
        flower: str,
        log_dir: Path,
        *,
        body_timeout_s: int = 30,
        knobs: dict[str, str] | None = None,
    ):
        super().__init__(log_dir / f"nginx-{settings.redis_prefix}.log")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.prefix = world_readable_dir("auditlog-nginx-")
        self.access_log = self.prefix / "access.log"
        self.config = write_config(
            settings,
            Topology(
                listen=self.address,
                api=apis,
                flower=flower,
                access_log=str(self.access_log),
                knobs={
                    **TEST_KNOBS,
                    "CLIENT_BODY_TIMEOUT": f"{body_timeout_s}s",
                    **(knobs or {}),
                },
            ),
            self.prefix,
        )

    def command(self) -> list[str]:
        return [NGINX, "-p", f"{self.prefix}/", "-c", str(self.config), "-e", "stderr"]

    def ready(self) -> bool:
        # Any answer will do: nginx is listening (the instances may not be up).
        requests.get(f"http://{self.address}/nginx-is-listening", timeout=2)
        return True

    def stop(self, sig: int = signal.SIGQUIT, timeout: float = 30) -> None:
        super().stop(sig, timeout)

    def remove(self) -> None:
        shutil.rmtree(self.prefix, ignore_errors=True)

    def access_lines(self) -> list[dict[str, Any]]:
        return json_lines(self.access_log)

    def url(self, path: str) -> str:
        return f"http://{self.address}{path}"
