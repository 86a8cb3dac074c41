"""Transparency others can check: C2SP checkpoints published by the worker and cosigned by
real witnesses (`auditlog witness`), tiles read by Go's own sumdb packages, proofs from
tiles equal to the API's, and forks refused.

The module runs a world of its own: log A (a database, a worker publishing every 0.5 s to
witnesses w1 and w2, an API instance under gunicorn), two witness servers, and the forks B
and C written with the same key straight into databases of their own.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import hashlib
import http.server
import io
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import rfc8785
from falcon import testing
from falcon.util import async_to_sync
from prometheus_client import REGISTRY
from sqlalchemy import create_engine, text

from auditlog.app import create_app
from auditlog.cli import main
from auditlog.integrity import merkle
from auditlog.integrity.checkpoint import SignedCheckpoint, check_checkpoint, log_verifier
from auditlog.integrity.heads import HeadSigner, generate_key
from auditlog.integrity.merkle import consistency_path, inclusion_path
from auditlog.integrity.note import COSIGNATURE_V1, VerifierKey
from auditlog.integrity.policy import Policy
from auditlog.integrity.proofs import b64decode, hash_leaf
from auditlog.integrity.tiles import TileRef, TileTree, unbundle
from auditlog.metrics import record_round
from auditlog.runtime import ApiRuntime, checkpoint_publisher
from auditlog.services.checkpoints import RoundReport
from auditlog.services.witness import origin_hash
from auditlog.settings import FOREIGN, PREFIX, Settings
from auditlog.storage.admin import drop_database, migrate, setup_database
from auditlog.storage.engine import create_role_engine
from auditlog.storage.event_writer import EventWriter
from auditlog.storage.witnesses import add_checkpoint_body
from tests import factories
from tests.helpers import ROOT, WorkerProcess, clear_redis, settings_env, wait_for
from tests.integration.conftest import (
    PUBLIC_KEY,
    SIGNING_KEY,
    LogCapture,
    authorized,
    create_key,
    make_settings,
    post,
    wait_stored,
)
from tests.topology import ApiInstance, Service, free_port, scrape, total

INTERVAL_S = 0.5
SIZE = 4000  # full and partial tiles of level 0, a partial one of level 1
FORK_SIZE = 100
GO = shutil.which("go") or "/usr/lib/go/bin/go"
GOPATH = "/usr/share/gocode"  # Debian's golang-golang-x-mod-dev
FOREIGN_VARS = set(FOREIGN.values())


# --- the pieces -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tlogcheck(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/interop/tlogcheck built with Debian's Go and golang.org/x/mod (setup.sh)."""
    out = tmp_path_factory.mktemp("go") / "tlogcheck"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": GOPATH, "GOFLAGS": ""}
    env.setdefault("GOCACHE", str(tmp_path_factory.getbasetemp() / "go-cache"))
    built = subprocess.run(
        [GO, "build", "-o", str(out), "./tests/interop/tlogcheck"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, f"go build failed (scripts/setup.sh installs Go): {built.stderr}"
    return out


class WitnessServer(Service):
    """`auditlog witness` on a free port, with a key and a state file of its own."""

    def __init__(self, name: str, log_vkey: str, directory: Path):
        super().__init__(directory / f"witness-{name}.log")
        self.name = name
        self.key_path = directory / f"witness-{name}.pem"
        self.state = directory / f"witness-{name}.json"
        public = generate_key(self.key_path)
        self.vkey = VerifierKey(f"{name}.test", COSIGNATURE_V1, public)
        self.log_vkey = log_vkey
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "auditlog.cli",
            "witness",
            "--name",
            self.vkey.name,
            "--key",
            str(self.key_path),
            "--state",
            str(self.state),
            "--log",
            self.log_vkey,
            "--listen",
            f"127.0.0.1:{self.port}",
        ]

    def ready(self) -> bool:
        return requests.get(f"{self.url}/{'0' * 64}/checkpoint", timeout=2).status_code == 404

    def add_checkpoint(self, old: int, proof: list[bytes], checkpoint: str) -> requests.Response:
        body = add_checkpoint_body(old, proof, checkpoint)
        return requests.post(f"{self.url}/add-checkpoint", data=body, timeout=10)

    def latest(self, origin: str) -> SignedCheckpoint:
        answer = requests.get(f"{self.url}/{origin_hash(origin)}/checkpoint", timeout=10)
        assert answer.status_code == 200, answer.text
        return SignedCheckpoint.parse(answer.content)


def queued(tag: str) -> dict[str, Any]:
    """An event in the stored form the API queues (what the writer takes)."""
    event = factories.event(data={"history": tag, "n": random.random()})
    event.update(received_at=event["occurred_at"], publisher=None)
    return event


def write(
    settings: Settings, events: list[dict[str, Any]], *, steps: tuple[int, ...] = (2000,)
) -> list[int]:
    """Store events through the writer in batches of the given sizes, in turn; the sizes of
    the heads signed."""
    engine = create_role_engine(settings, "writer", pool_size=1)
    writer = EventWriter(engine, HeadSigner.from_file(SIGNING_KEY))
    sizes, at, turn = [], 0, itertools.cycle(steps)
    try:
        while at < len(events):
            step = next(turn)
            head = writer.write(events[at : at + step]).head
            assert head is not None
            sizes.append(head.tree_size)
            at += step
    finally:
        writer.close()
    return sizes


@dataclass
class Log:
    """One deployment's database (and, for A, its worker and API instance)."""

    settings: Settings
    heads: list[int]
    events: list[dict[str, Any]]


def new_settings(policy: Path | None, **overrides: Any) -> Settings:
    settings = make_settings(
        checkpoint_interval_s=INTERVAL_S,
        witness_policy=policy,
        log_origin="log.test/auditlog",
        **overrides,
    )
    setup_database(settings)
    migrate(settings)
    return settings


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


def cli(settings: Settings, *args: str) -> Ran:
    """`auditlog ARGS` in this process, with the settings' AUDITLOG_* environment."""
    environment = {
        k: v for k, v in settings_env(settings).items() if k.startswith(PREFIX) or k in FOREIGN_VARS
    }
    saved = {k: v for k, v in os.environ.items() if k.startswith(PREFIX) or k in FOREIGN_VARS}
    out, err = io.StringIO(), io.StringIO()
    try:
        for key in saved:
            del os.environ[key]
        os.environ.update(environment)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        for key in environment:
            os.environ.pop(key, None)
        os.environ.update(saved)
    return Ran(code, out.getvalue(), err.getvalue())


@dataclass
class World:
    a: Log
    w1: WitnessServer
    w2: WitnessServer
    w3: WitnessServer  # down while A is built; it cosigned fork F of the same key first
    f: Log
    api: ApiInstance
    worker: WorkerProcess
    token: str
    app: Any
    runtime: ApiRuntime
    client: testing.TestClient  # reads A (a read key); its reads are not written to A
    ingest: testing.TestClient  # posts to A's stream, which A's worker drains
    saved: str  # a checkpoint of A saved early on
    directory: Path


LOG_VKEY = log_verifier(PUBLIC_KEY, "log.test/auditlog").text()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, logs_dir: Path) -> Iterator[World]:
    directory = tmp_path_factory.mktemp("transparency")
    w1 = WitnessServer("w1", LOG_VKEY, directory)
    w2 = WitnessServer("w2", LOG_VKEY, directory)
    policy = directory / "policy"
    metrics_dir = directory / "worker-metrics"
    metrics_dir.mkdir()
    with contextlib.ExitStack() as stack:
        # w3 first cosigns F, another history of the log's key and origin, then stops: A's
        # worker finds it down (a failure, retried), until TestRefusal starts it again.
        w3 = WitnessServer("w3", LOG_VKEY, directory)
        stack.callback(w3.stop)
        w3.start()
        f = fork(f"witness w3 {w3.vkey.text()} {w3.url}\nquorum w3\n", directory, "f", "F")
        stack.callback(drop_database, f.settings)
        assert publish_once(f).cosigned == ["w3"]
        w3.stop()
        policy.write_text(
            f"log {LOG_VKEY}\nwitness w1 {w1.vkey.text()} {w1.url}\n"
            f"witness w2 {w2.vkey.text()} {w2.url}\nwitness w3 {w3.vkey.text()} {w3.url}\n"
            "group both all w1 w2\nquorum both\n"
        )
        settings = new_settings(
            policy, worker_metrics_port=free_port(), metrics_dir=metrics_dir, public_tiles=False
        )
        # Reads are recorded in the log they read: the readers here queue their records on
        # a stream of their own that nobody drains, so that A keeps the sizes built here.
        reads = settings.model_copy(update={"redis_prefix": f"{settings.redis_prefix}-reads"})
        stack.callback(clear_redis, reads)
        stack.callback(clear_redis, settings)
        stack.callback(drop_database, settings)
        worker = WorkerProcess(settings, logs_dir, name="transparency-worker")
        api = ApiInstance(reads, logs_dir, "transparency-api", workers=1)
        stack.callback(together, [w1.stop, w2.stop, worker.stop, api.stop])
        together([w1.start, w2.start, worker.start, api.start])
        runtime = ApiRuntime.build(reads)
        stack.callback(async_to_sync, runtime.close)
        ingest_runtime = ApiRuntime.build(settings)
        stack.callback(async_to_sync, ingest_runtime.close)
        app = create_app(reads, runtime=runtime)
        token = create_key(settings, "transparency-reader", "read")
        client = testing.TestClient(app, headers={"Authorization": f"Bearer {token}"})
        events = [queued("A") for _ in range(SIZE)]
        heads = write(settings, events[:1000], steps=(1, 3, 17, 200, 256))
        saved = wait_cosigned(client, 1000, [w1, w2])
        heads += write(settings, events[1000:], steps=(2000,))
        wait_cosigned(client, SIZE, [w1, w2])
        yield World(
            Log(settings, heads, events),
            w1,
            w2,
            w3,
            f,
            api,
            worker,
            token,
            app,
            runtime,
            client,
            authorized(
                create_app(settings, runtime=ingest_runtime),
                create_key(settings, "transparency-writer", "write", "billing"),
            ),
            saved,
            directory,
        )


def together(actions: list[Callable[[], object]]) -> None:
    """Start (or stop) processes at once: each waits for itself."""
    with concurrent.futures.ThreadPoolExecutor(len(actions)) as pool:
        for done in [pool.submit(action) for action in actions]:
            done.result()


def wait_cosigned(client: testing.TestClient, size: int, witnesses: list[WitnessServer]) -> str:
    """The checkpoint at `size` once every witness has cosigned it."""
    policy = Policy.from_witnesses([w.vkey for w in witnesses], None)

    def cosigned() -> str | None:
        answer = client.simulate_get("/v1/log/checkpoint")
        if answer.status_code != 200:
            return None
        signed = SignedCheckpoint.parse(answer.text)
        keys = [VerifierKey.parse(LOG_VKEY)]
        if signed.checkpoint.tree_size == size and check_checkpoint(signed, keys, policy).trusted:
            return answer.text
        return None

    return str(wait_for(cosigned, timeout=60, interval=0.1, what=f"checkpoint {size} cosigned"))


def fork(policy: str, directory: Path, name: str, tag: str, size: int = FORK_SIZE) -> Log:
    """Another database holding another history, signed with the same key under the same
    origin, whose publisher submits to the witnesses of `policy` (tlog-policy text)."""
    path = directory / f"policy-{name}"
    path.write_text(policy)
    settings = new_settings(path)
    events = [queued(tag) for _ in range(size)]
    return Log(settings, write(settings, events), events)


def publish_once(log: Log, *, resume: bool = False) -> RoundReport:
    publisher = checkpoint_publisher(log.settings)
    try:
        return publisher.run_once(resume=resume)
    finally:
        publisher.close()


# --- the tests --------------------------------------------------------------------------


class TestPublication:
    """The worker publishes checkpoints on its interval, and both witnesses cosign them."""

    def test_checkpoints_follow_the_interval_not_the_batches(self, world: World):
        engine = create_engine(world.a.settings.url_for("owner"))
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    text("SELECT tree_size, published_at FROM checkpoints ORDER BY tree_size")
                ).all()
        finally:
            engine.dispose()
        assert len(rows) < len(world.a.heads), (len(rows), len(world.a.heads))
        assert {size for size, _ in rows} <= set(world.a.heads)
        gaps = [(b - a).total_seconds() for (_, a), (_, b) in itertools.pairwise(rows)]
        assert min(gaps) >= INTERVAL_S * 0.99, gaps

    def test_checkpoint_answer(self, world: World):
        answer = world.client.simulate_get("/v1/log/checkpoint")
        assert answer.headers["content-type"] == "text/plain; charset=utf-8"
        assert answer.headers["cache-control"] == "private, max-age=2"
        signed = SignedCheckpoint.parse(answer.text)
        assert signed.checkpoint.origin == "log.test/auditlog"
        names = [line.name for line in signed.note.signatures]
        assert names[0] == "log.test/auditlog"
        assert sorted(names[1:]) == ["w1.test", "w2.test"]

    def test_public_key_answer_names_the_verifier_key(self, world: World):
        answer = world.client.simulate_get("/v1/integrity/public-key").json
        assert answer["verifier_key"] == LOG_VKEY
        assert answer["origin"] == "log.test/auditlog"


class TestGoReadsTheLog:
    """golang.org/x/mod/sumdb/note and sumdb/tlog, over HTTP from the API instance."""

    def test_checkpoint_tiles_inclusion_and_consistency(self, world: World, tlogcheck: Path):
        saved = world.directory / "saved-checkpoint"
        saved.write_text(world.saved)
        leaves = [0, 255, 256, 999, 1000, 3839, 3840, SIZE - 1, *random.sample(range(SIZE), 6)]
        run = subprocess.run(
            [
                str(tlogcheck),
                "-url",
                f"http://{world.api.address}",
                "-token",
                world.token,
                "-vkey",
                LOG_VKEY,
                "-old",
                str(saved),
                "-leaves",
                ",".join(map(str, leaves)),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert run.returncode == 0, run.stderr
        result = json.loads(run.stdout)
        assert result["checkpoint"]["size"] == SIZE
        assert result["consistency"]["old"] == 1000
        assert [i["index"] for i in result["inclusions"]] == leaves
        by_id = {e["id"]: e for e in world.a.events}
        for proved in result["inclusions"]:
            entry = base64.b64decode(proved["entry"])
            document = json.loads(entry)
            # The entry is the RFC 8785 form of the event as GET /v1/events/{id} returns it.
            assert document["seq"] == proved["index"]
            assert document["id"] in by_id
            stored = world.client.simulate_get(f"/v1/events/{document['id']}").json
            recorded = b64decode(stored.pop("leaf_hash"))
            assert rfc8785.dumps(stored) == entry
            assert hash_leaf(entry) == recorded == base64.b64decode(proved["leaf_hash"])

    def test_a_changed_tile_is_caught_by_go(self, world: World, tlogcheck: Path):
        """Served through a proxy that flips a bit of every level-0 tile, the tiles no longer
        add up to the signed root: Go's tlog refuses them (the test can fail: it would pass
        a program that believed the tiles)."""
        server = TamperingProxy(f"http://{world.api.address}")
        try:
            run = subprocess.run(
                [
                    str(tlogcheck),
                    "-url",
                    server.url,
                    "-token",
                    world.token,
                    "-vkey",
                    LOG_VKEY,
                    "-leaves",
                    "5",
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        finally:
            server.stop()
        assert run.returncode == 1
        assert "inconsistent tile" in run.stderr or "give root" in run.stderr, run.stderr


class TamperingProxy:
    """Forwards /v1/log/* to the log, with one bit of every level-0 hash tile flipped."""

    def __init__(self, upstream: str):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                headers = {"Authorization": self.headers["Authorization"]}
                answer = requests.get(upstream + self.path, headers=headers, timeout=10)
                body = bytearray(answer.content)
                if self.path.startswith("/v1/log/tile/0/"):
                    body[0] ^= 1
                self.send_response(answer.status_code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(bytes(body))

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class TestTilesMatchTheProofs:
    """Hashes computed from tiles equal what /proof and /consistency answer: 1,000 pairs.

    The answers are taken from the IntegrityService the two endpoints return as they are
    (controllers/integrity.py), and for a few pairs through HTTP as well, to tie them."""

    def test_one_thousand_random_pairs(self, world: World):
        rng = random.Random(17)
        heads = world.a.heads
        fetched: dict[str, bytes] = {}

        def fetch(ref: TileRef) -> bytes:
            if ref.path() not in fetched:
                answer = world.client.simulate_get(f"/v1/log/{ref.path()}")
                assert answer.status_code == 200, answer.text
                fetched[ref.path()] = answer.content
            return fetched[ref.path()]

        sizes = rng.sample(heads, 12)  # a dozen tree sizes, each with its own partial tiles
        trees = {size: TileTree(size, fetch) for size in sizes}
        integrity = world.runtime.integrity
        for n in range(500):
            size = rng.choice(sizes)
            event_id = world.a.events[rng.randrange(size)]["id"]
            params = {"tree_size": str(size)}
            proof = async_to_sync(
                integrity.inclusion_proof, event_id, params, viewer=factories.principal()
            )
            if n < 10:
                over_http = world.client.simulate_get(f"/v1/events/{event_id}/proof", params=params)
                assert over_http.json == proof
            expected = inclusion_path(proof["leaf_index"], size, trees[size].node)
            assert [b64decode(h) for h in proof["inclusion_path"]] == expected
        for n in range(500):
            second = rng.choice(sizes)
            params = {
                "first": str(rng.choice([h for h in heads if h <= second])),
                "second": str(second),
            }
            answer = async_to_sync(integrity.consistency, params)
            if n < 10:
                over_http = world.client.simulate_get("/v1/integrity/consistency", params=params)
                assert over_http.json == answer
            expected = consistency_path(answer["first"], second, trees[second].node)
            assert [b64decode(h) for h in answer["consistency_path"]] == expected
        for size, tree in trees.items():
            head = async_to_sync(integrity.tree_head, {"size": str(size)})
            assert b64decode(head["root_hash"]) == merkle.root(size, tree.node)


class TestTileAnswers:
    def test_full_and_partial_tiles_and_their_caching(self, world: World):
        full = world.client.simulate_get("/v1/log/tile/0/000")
        assert full.status_code == 200
        assert len(full.content) == 256 * 32
        assert full.headers["cache-control"] == "private, max-age=31536000, immutable"
        partial = world.client.simulate_get("/v1/log/tile/0/015.p/160")  # 4,000 leaves
        assert partial.status_code == 200
        assert len(partial.content) == 160 * 32
        assert partial.headers["cache-control"] == "private, max-age=60"
        assert full.content[:32] == b64decode(
            world.client.simulate_get(f"/v1/events/{world.a.events[0]['id']}").json["leaf_hash"]
        )
        assert world.client.simulate_get("/v1/log/tile/1/000.p/15").status_code == 200

    @pytest.mark.parametrize(
        ("path", "status"),
        [
            ("tile/0/015", 404),  # not full yet
            ("tile/0/015.p/161", 404),
            ("tile/2/000.p/1", 404),
            ("tile/0/x000/015", 400),
            ("tile/0/12", 400),
            ("tile/64/000", 400),
            ("tile/0/000.p/256", 400),
            ("tile/entries/016", 404),
        ],
    )
    def test_refused_paths(self, world: World, path: str, status: int):
        answer = world.client.simulate_get(f"/v1/log/{path}")
        assert answer.status_code == status, answer.text
        assert answer.json["description"]

    def test_entry_bundles_need_a_key_and_match_level_0(self, world: World):
        anonymous = testing.TestClient(world.app)
        assert anonymous.simulate_get("/v1/log/tile/entries/001").status_code == 401
        assert anonymous.simulate_get("/v1/log/tile/0/001").status_code == 401
        bundle = unbundle(world.client.simulate_get("/v1/log/tile/entries/001").content)
        tile = world.client.simulate_get("/v1/log/tile/0/001").content
        assert [hash_leaf(e) for e in bundle] == [tile[i : i + 32] for i in range(0, 8192, 32)]

    def test_public_tiles_setting(self, world: World):
        settings = world.a.settings.model_copy(update={"public_tiles": True})
        runtime = ApiRuntime.build(settings)
        try:
            anonymous = testing.TestClient(create_app(settings, runtime=runtime))
            tile = anonymous.simulate_get("/v1/log/tile/1/000.p/1")
            assert tile.status_code == 200
            assert tile.headers["cache-control"] == "public, max-age=60"
            assert anonymous.simulate_get("/v1/log/checkpoint").status_code == 200
            assert anonymous.simulate_get("/v1/log/tile/entries/000").status_code == 401
            document = anonymous.simulate_get("/openapi.json").json
            assert document["paths"]["/v1/log/checkpoint"]["get"]["security"] == [{}]
        finally:
            async_to_sync(runtime.close)


class TestVerifyCommand:
    """`auditlog verify` with witnesses, a policy, keys in every form, and tiles alone."""

    def test_quorum_and_keys_in_every_form(self, world: World):
        witnesses = ["--witness", world.w1.vkey.text(), "--witness", world.w2.vkey.text()]
        pem = Path(f"{SIGNING_KEY}.pub").read_text()
        for key in (base64.b64encode(PUBLIC_KEY).decode(), LOG_VKEY, pem, f"{SIGNING_KEY}.pub"):
            run = cli(world.a.settings, "verify", "--public-key", key, *witnesses)
            assert run.returncode == 0, run.stdout + run.stderr
        assert "cosigned by w1.test, w2.test" in run.stdout
        assert "the log has grown from the latest checkpoint" in run.stdout

    def test_policy_file(self, world: World):
        run = cli(world.a.settings, "verify", "--policy", str(world.directory / "policy"))
        assert run.returncode == 0, run.stdout + run.stderr

    def test_a_quorum_the_checkpoint_cannot_meet(self, world: World):
        stranger = VerifierKey("w3.test", COSIGNATURE_V1, hashlib.sha256(b"w3").digest())
        run = cli(world.a.settings, "verify", "--witness", stranger.text(), "--quorum", "1")
        assert run.returncode == 1
        assert "does not meet the policy's quorum" in run.stdout

    def test_extends_a_saved_checkpoint_from_tiles_alone(self, world: World):
        saved = world.directory / "saved"
        saved.write_text(world.saved)
        run = cli(
            world.a.settings,
            "verify",
            "--url",
            f"http://{world.api.address}",
            "--token",
            world.token,
            "--checkpoint",
            str(saved),
            "--public-key",
            LOG_VKEY,
            "--witness",
            world.w1.vkey.text(),
            "--quorum",
            "1",
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert f"consistent: the log at size {SIZE} extends the saved checkpoint at size 1000" in (
            run.stdout
        )


def worker_metrics(world: World) -> str:
    return f"http://127.0.0.1:{world.a.settings.worker_metrics_port}/metrics"


@pytest.fixture(scope="class")
def w3_up(world: World) -> Iterator[float]:
    """w3 answers again, holding F (100 events): what A's worker had counted until then."""
    samples = scrape(worker_metrics(world))
    assert total(samples, "auditlog_witness_failures_total", witness="w3") > 0  # it was down
    world.w3.start()
    try:
        yield total(samples, "auditlog_witness_refusals_total", witness="w3")
    finally:
        world.w3.stop()


class TestForks:
    """Histories of the same key that a witness cannot reconcile."""

    def test_same_size_fork(self, world: World, w3_up: float, server_log: LogCapture):
        """The same key signs a second history of the same size: the witness refuses it,
        the forked log's publication stops, the alert rises, a quorum of 1 rejects it."""
        # w3 holds F at size 100; G is another 100 events, signed with the same key.
        policy = f"witness w3 {world.w3.vkey.text()} {world.w3.url}\nquorum w3\n"
        forked = fork(policy, world.directory, "g", "G")
        try:
            self._check(world, forked, server_log)
        finally:
            drop_database(forked.settings)

    def _check(self, world: World, forked: Log, server_log: LogCapture) -> None:
        refusals = REGISTRY.get_sample_value("auditlog_witness_refusals_total", {"witness": "w3"})
        report = publish_once(forked)
        record_round(report)  # what the worker's publisher thread does with each round
        assert (report.published, report.refused, report.stopped) == (FORK_SIZE, ["w3"], True)
        after = REGISTRY.get_sample_value("auditlog_witness_refusals_total", {"witness": "w3"})
        assert after == (refusals or 0) + 1
        assert REGISTRY.get_sample_value("auditlog_checkpoint_publication_stopped") == 1
        refused = [r for r in server_log.records() if "refused the checkpoint" in r["event"]]
        assert refused[0]["level"] == "error"
        assert refused[0]["status"] == 422

        # What the witness answers, asked directly: it saw size 100 (409, the size as
        # text/x.tlog.size); at that size it holds another root hash (422).
        engine = create_engine(forked.settings.url_for("owner"))
        try:
            with engine.connect() as conn:
                note = conn.scalar(text("SELECT note FROM checkpoints"))
                statuses = list(conn.execute(text("SELECT status FROM witness_refusals")).scalars())
        finally:
            engine.dispose()
        assert statuses == [422]
        first = world.w3.add_checkpoint(0, [], note)
        assert (first.status_code, first.text) == (409, f"{FORK_SIZE}\n")
        assert first.headers["content-type"] == "text/x.tlog.size"
        assert world.w3.add_checkpoint(FORK_SIZE, [], note).status_code == 422

        # Publication stays stopped while the forked log grows; an operator's resume signs
        # the grown log, and the witness refuses that too.
        write(forked.settings, [queued("G") for _ in range(10)])
        again = publish_once(forked)
        assert (again.published, again.stopped) == (None, True)
        resumed = publish_once(forked, resume=True)
        assert (resumed.published, resumed.refused) == (FORK_SIZE + 10, ["w3"])

        # An auditor asking for one witness's cosignature rejects the forked log's
        # checkpoint; F, the history w3 saw, passes; and against the real log the forked
        # checkpoint is inconsistent with its tiles.
        witness = ["--witness", world.w3.vkey.text(), "--quorum", "1"]
        rejected = cli(forked.settings, "verify", *witness)
        assert rejected.returncode == 1
        assert "UNTRUSTED" in rejected.stdout
        assert cli(world.f.settings, "verify", *witness).returncode == 0
        saved = world.directory / "forked-checkpoint"
        saved.write_text(note)
        split = cli(
            world.a.settings,
            "verify",
            "--url",
            f"http://{world.api.address}",
            "--token",
            world.token,
            "--checkpoint",
            str(saved),
        )
        assert split.returncode == 1, split.stdout + split.stderr
        assert "INCONSISTENT" in split.stdout

    def test_the_worker_stops_publishing_and_ingest_goes_on(self, world: World, w3_up: float):
        """A's worker submits its checkpoint to w3, which saw F: refused. The worker stops
        publishing, logs it, raises the alert; events are still accepted and stored."""
        metrics = worker_metrics(world)
        owner = create_engine(world.a.settings.url_for("owner"))
        try:
            wait_for(
                lambda: (
                    total(scrape(metrics), "auditlog_witness_refusals_total", witness="w3") > w3_up
                ),
                timeout=30,
                what="the worker's refusal alert",
            )
            assert total(scrape(metrics), "auditlog_checkpoint_publication_stopped") == 1
            lines = [r for r in world.worker.log_lines() if "refused the checkpoint" in str(r)]
            assert lines[0]["witness"] == "w3"
            assert lines[0]["level"] == "error"
            stopped_at = latest_size(owner)

            # Ingest goes on, through the API and the worker; publication does not.
            more = [factories.event() for _ in range(20)]
            assert post(world.ingest, more).status_code == 202
            wait_stored(owner, [e["id"] for e in more])
            time.sleep(INTERVAL_S * 4)
            assert latest_size(owner) == stopped_at
        finally:
            owner.dispose()


def latest_size(engine: Any) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(text("SELECT max(tree_size) FROM checkpoints")))
