"""`make run`'s Procfile under honcho: everything starts, and SIGTERM stops it all cleanly.

The Procfile is the shipped one; only its ports and run directory are moved (HTTP_PORT, …,
RUN_DIR), and the deployment is the test's own (database, Redis prefix). As in `make run`,
its Redis has the ACL users of `auditlog redis-acl` and every program logs in as its own.
"""

from __future__ import annotations

import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import orjson
import pytest
import requests
from sqlalchemy import Engine

from auditlog.settings import REDIS_USERS, Settings
from auditlog.storage.redis_users import acl_file
from auditlog.storage.stream import GROUP
from tests import factories
from tests.faults.servers import RedisProcess, redis_version
from tests.helpers import ROOT, WorkerProcess, settings_env, wait_for
from tests.integration.conftest import Tokens, wait_stored
from tests.topology import free_port, world_readable_dir

pytestmark = pytest.mark.slow

PROGRAMS = ("nginx", "api1", "api2", "worker", "flower")


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


class TestMakeRun:
    def test_procfile_runs_the_topology_and_sigterm_stops_it_without_loss(
        self,
        settings: Settings,
        logs_dir: Path,
        owner_db: Engine,
        tmp_path: Path,
        tokens: Tokens,
    ):
        own = settings.model_copy(
            update={
                "redis_prefix": f"{settings.redis_prefix}-run{uuid.uuid4().hex[:4]}",
                "flower_password": "make-run-test",
                **{f"redis_{role}_password": secrets.token_urlsafe(18) for role in REDIS_USERS},
            }
        )
        server = RedisProcess(
            tmp_path / "redis", appendonly=False, acl=acl_file(own, redis_version())
        ).start()
        own = own.model_copy(update={"redis_url": server.url})
        ports = {
            name: free_port() for name in ("HTTP_PORT", "API_1_PORT", "API_2_PORT", "FLOWER_PORT")
        }
        worker_metrics = free_port()
        run_dir = world_readable_dir("auditlog-run-")
        bin_dir = Path(sys.executable).parent
        env = {
            **settings_env(own),
            **{name: str(port) for name, port in ports.items()},
            "AUDITLOG_WORKER_METRICS_PORT": str(worker_metrics),
            "RUN_DIR": str(run_dir),
            "PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/bin",
        }
        (tmp_path / "empty.env").write_text("")
        log_path = logs_dir / f"honcho-{own.redis_prefix}.log"
        with log_path.open("wb") as log:
            honcho = subprocess.Popen(
                [
                    *(sys.executable, "-m", "honcho", "start", "--no-colour"),
                    *("-f", str(ROOT / "Procfile"), "-e", str(tmp_path / "empty.env")),
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        base = f"http://127.0.0.1:{ports['HTTP_PORT']}"
        try:

            def up() -> bool:
                assert honcho.poll() is None, log_path.read_text()
                try:
                    return (
                        requests.get(f"{base}/readyz", timeout=2).ok
                        and requests.get(f"http://127.0.0.1:{worker_metrics}/metrics", timeout=2).ok
                        and requests.get(
                            f"{base}/flower/", auth=("auditlog", "make-run-test"), timeout=2
                        ).ok
                    )
                except requests.RequestException:
                    return False

            wait_for(up, timeout=60, interval=0.5, what=f"the topology up (log {log_path})")
            # The auditors' viewer is served through nginx, as the README says.
            viewer = requests.get(f"{base}/viewer/", timeout=5)
            assert viewer.status_code == 200
            assert "default-src 'self'" in viewer.headers["Content-Security-Policy"]

            # Producers keep posting while the whole thing is stopped.
            accepted: list[str] = []
            stop_posting = threading.Event()

            def produce() -> None:
                with requests.Session() as http:
                    http.headers["Authorization"] = f"Bearer {tokens.admin}"
                    while not stop_posting.is_set():
                        try:
                            answer = http.post(
                                f"{base}/v1/events",
                                data=orjson.dumps(factories.events(50)),
                                headers={"Content-Type": "application/json"},
                                timeout=10,
                            )
                        except requests.RequestException:
                            return  # nginx has gone
                        if answer.status_code != 202:
                            return
                        accepted.extend(answer.json()["ids"])

            producers = [threading.Thread(target=produce) for _ in range(3)]
            for thread in producers:
                thread.start()
            wait_for(lambda: len(accepted) >= 1500, timeout=60, what="events accepted")
            honcho.send_signal(signal.SIGTERM)
            honcho.wait(20)
            stop_posting.set()
            for thread in producers:
                thread.join(20)
        finally:
            if honcho.poll() is None:
                honcho.kill()
            shutil.rmtree(run_dir, ignore_errors=True)

        output = log_path.read_text(errors="replace")
        for program in PROGRAMS:
            assert re.search(rf"{program}\.1 stopped \(rc=0\)", output), (program, output[-3000:])
        assert "SIGKILL" not in output
        for port in (*ports.values(), worker_metrics):
            assert not listening(port), port

        # The writers finished the batches they held: nothing is left read but unwritten.
        client = server.client()
        try:
            assert int(client.xpending(own.key("events"), GROUP)["pending"]) == 0
            # What they had not read yet waits for the next start, and is then written once.
            worker = WorkerProcess(own, logs_dir, name="after-run").start()
            try:
                counts = wait_stored(owner_db, accepted, timeout=60)
                assert set(counts.values()) == {1}
            finally:
                worker.stop()
        finally:
            client.close()
            with server.client() as admin:
                refused = admin.acl_log(count=100)
            server.stop()
        assert refused == [], "Redis refused a program something it does"
