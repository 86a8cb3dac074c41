"""The `auditlog` command: set up the database, migrate it, inspect the pipeline."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import exc as sa_exc

from auditlog.auditor import LogClient, Outcome, Unreachable, check_extends, check_published
from auditlog.canonical import parse_timestamp
from auditlog.integrity.checkpoint import SignedCheckpoint, log_verifier
from auditlog.integrity.export import ExportFormatError, read_export, write_export
from auditlog.integrity.heads import TreeHead, b64, generate_key, load_private_key
from auditlog.integrity.keys import PublicKey, read_key, read_key_file
from auditlog.integrity.note import COSIGNATURE_V1, NoteSigner, VerifierKey
from auditlog.integrity.policy import NONE, Policy
from auditlog.integrity.verify import Anchor, LogVerifier, VerifyReport, interleave
from auditlog.nginx import KNOBS, Topology, write_config
from auditlog.services.audit import SelfAudit
from auditlog.services.auth import KeyAdmin
from auditlog.services.ingest import IngestService
from auditlog.settings import Settings, SettingsError
from auditlog.storage.admin import migrate, setup_database
from auditlog.storage.checkpoints import CheckpointStore
from auditlog.storage.engine import create_role_engine
from auditlog.storage.keys import ApiKey, KeyExists, KeyStore
from auditlog.storage.tree import TreeStore


def _cmd_setup_db(settings: Settings, args: argparse.Namespace) -> int:
    setup_database(settings)
    print(f"database {settings.database_name!r} ready (owner role, TimescaleDB extension)")
    return 0


def _cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    if args.setup:
        setup_database(settings)
    migrate(settings, args.revision)
    return 0


def _cmd_dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    from auditlog.runtime import event_stream, redis_client  # noqa: PLC0415 - CLI only

    stream = event_stream(settings, redis_client(settings, "writer"))
    letters = stream.dead_letters(args.limit)
    print(f"{stream.dead_letter_count()} dead-lettered entries")
    for letter in letters:
        payload = (letter.payload or b"").decode(errors="replace")[:200]
        print(f"{letter.entry_id}\t{letter.error}\t{payload}")
    return 0


def _cmd_queue(settings: Settings, args: argparse.Namespace) -> int:
    from auditlog.runtime import event_stream, redis_client  # noqa: PLC0415 - CLI only

    stream = event_stream(settings, redis_client(settings, "api"))
    print(f"waiting or being written: {stream.depth()}")
    print(f"dead-lettered: {stream.dead_letter_count()}")
    return 0


def _cmd_keygen(settings: Settings, args: argparse.Namespace) -> int:
    path = Path(args.out) if args.out else settings.signing_key_path
    if path.exists():
        if args.if_missing:
            print(b64(read_key_file(path).raw))
            return 0
        print(f"auditlog: {path} exists; refusing to replace a signing key", file=sys.stderr)
        return 2
    public = generate_key(path)
    print(f"wrote the private key to {path} and the public key to {path}.pub")
    vkey = log_verifier(public, settings.log_origin).text()
    print(f"verifier key (origin {settings.log_origin}): {vkey}")
    print(b64(public))
    return 0


def _cmd_public_key(settings: Settings, args: argparse.Namespace) -> int:
    """The log's public key in every form auditors use (or a witness's cosigning key)."""
    try:
        if args.witness:
            if not args.key:
                raise ValueError("--witness NAME needs --key (the witness's private key file)")
            raw = read_key_file(Path(args.key)).raw
            print(VerifierKey(args.witness, COSIGNATURE_V1, raw).text())
            return 0
        raw = read_key_file(Path(args.key)).raw if args.key else _settings_key(settings)
    except (SettingsError, ValueError) as exc:
        print(f"auditlog: {exc}", file=sys.stderr)
        return 2
    print(f"base64:       {b64(raw)}")
    print(f"verifier key: {log_verifier(raw, settings.log_origin).text()}")
    print(f"origin:       {settings.log_origin}")
    return 0


def _settings_key(settings: Settings) -> bytes:
    from auditlog.runtime import public_key  # noqa: PLC0415 - the CLI builds only what it uses

    return public_key(settings)


def _public_key_for(settings: Settings, args: argparse.Namespace) -> PublicKey:
    """--public-key in any form (base64, PEM, verifier key, a file), else the settings'."""
    if args.public_key:
        return read_key(args.public_key)
    return PublicKey(_settings_key(settings))


def _print_report(report: VerifyReport, *, anchors: list[Anchor]) -> int:
    if report.intact:
        read = f"{report.events} events and {report.heads} signed tree heads"
        if report.count_spans:
            read = (
                f"{report.events} events, {report.heads} signed tree heads and "
                f"{report.count_spans} spans of stored counts"
            )
        print(f"intact: {read} verified; tree size {report.tree_size}")
        for anchor in anchors:
            print(f"the log has grown from {anchor.what} at size {anchor.tree_size}")
        if not anchors:
            print(
                "(events removed from the end together with the heads covering them show "
                "only against a tree head or checkpoint kept from earlier: --trusted-head, "
                "--checkpoint)"
            )
        return 0
    first = report.first()
    assert first is not None
    where = f"seq {first.seq}" if first.seq is not None else "a tree head"
    print(f"TAMPERED: the first disagreement is at {where}: {first.message}")
    for finding in report.findings:
        print(f"  [{finding.kind}] {finding.message}")
    spans = f", {report.count_spans} spans of stored counts" if report.count_spans else ""
    print(f"({report.events} events, {report.heads} tree heads{spans} read)")
    return 1


def _trusted_head(path: str | None) -> TreeHead | None:
    """A tree head saved from `GET /v1/integrity/tree-head` (ValueError if it is not one)."""
    if path is None:
        return None
    try:
        value = orjson.loads(Path(path).read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: not a tree head object")
    return TreeHead.from_dict(value)


def _saved_checkpoint(path: str | None) -> SignedCheckpoint | None:
    """A checkpoint saved from `GET /v1/log/checkpoint` (ValueError if it is not one)."""
    if path is None:
        return None
    try:
        return SignedCheckpoint.parse(Path(path).read_bytes())
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ValueError(f"{path}: not a checkpoint: {exc}") from None


def _policy(args: argparse.Namespace) -> Policy | None:
    """--policy FILE, or --witness KEY… [--quorum N]; None: no witness asked for."""
    if args.policy and (args.witness or args.quorum is not None):
        raise ValueError("give a policy file or --witness/--quorum, not both")
    if args.policy:
        return Policy.read(Path(args.policy))
    if not args.witness and args.quorum is None:
        return None
    keys = []
    for spec in args.witness or []:
        key = read_key(spec).vkey
        if key is None:
            raise ValueError(f"--witness {spec[:60]}: a witness is given by its verifier key")
        keys.append(key)
    return Policy.from_witnesses(keys, args.quorum)


def _log_key(settings: Settings, args: argparse.Namespace, policy: Policy | None) -> PublicKey:
    """--public-key, else the first log of a policy file, else the settings' key."""
    if args.public_key is None and policy is not None and policy.logs:
        first = policy.logs[0].key
        return PublicKey(first.public_key, first)
    return _public_key_for(settings, args)


def _print_outcome(outcome: Outcome) -> None:
    for line in outcome.lines:
        print(line)


def _cmd_verify(settings: Settings, args: argparse.Namespace) -> int:
    """Exit 0: intact; 1: tampered or untrusted; 2: could not be checked."""
    try:
        policy = _policy(args)
        key = _log_key(settings, args, policy)
        trusted = _trusted_head(args.trusted_head)
        saved = _saved_checkpoint(args.checkpoint)
        if args.url:
            if args.file or trusted is not None:
                raise ValueError("--url reads checkpoints and tiles: not --file, --trusted-head")
            return _verify_tiles(args, key, policy, saved)
        anchors = []
        if saved is not None:
            outcome = check_published(saved, key, None, what="the saved checkpoint")
            _print_outcome(outcome)
            if not outcome.ok:
                return 1
            kept = saved.checkpoint
            anchors.append(Anchor(kept.tree_size, kept.root_hash, "the saved checkpoint"))
        if args.file:
            if policy is not None:
                raise ValueError(
                    "an export holds no checkpoints: --witness and --policy need "
                    "the database or --url"
                )
            return _verify_file(args.file, key, trusted, anchors)
        return _verify_database(settings, key, policy, trusted, anchors)
    except ExportFormatError as exc:
        print(f"auditlog: {args.file}: {exc}", file=sys.stderr)
    except (Unreachable, OSError, ValueError, SettingsError) as exc:  # PolicyError: ValueError
        print(f"auditlog: {exc}", file=sys.stderr)
    except sa_exc.OperationalError as exc:
        print(f"auditlog: the database does not answer: {exc.orig}", file=sys.stderr)
    return 2


def _verify_file(path: str, key: PublicKey, trusted: TreeHead | None, anchors: list[Anchor]) -> int:
    with open(path, "rb") as lines:
        piece = read_export(lines)
        verifier = LogVerifier(
            key.raw,
            start=piece.start,
            prefix=piece.prefix,
            end=piece.end,
            trusted=trusted,
            anchors=anchors,
        )
        report = verifier.run(piece.items)
    if trusted is not None:
        anchors.insert(0, Anchor(trusted.tree_size, trusted.root_hash))
    return _print_report(report, anchors=anchors)


def _verify_database(
    settings: Settings,
    key: PublicKey,
    policy: Policy | None,
    trusted: TreeHead | None,
    anchors: list[Anchor],
) -> int:
    """Recompute the whole log; the latest checkpoint, checked against the policy, is one
    more anchor."""
    engine = create_role_engine(settings, "reader", pool_size=1)
    try:
        latest = CheckpointStore(engine).latest()
        checked = Outcome()
        if latest is not None:
            signed = SignedCheckpoint.parse(latest.render())
            checked = check_published(signed, key, policy)
            if checked.ok:
                anchors.append(
                    Anchor(
                        signed.checkpoint.tree_size,
                        signed.checkpoint.root_hash,
                        "the latest checkpoint",
                    )
                )
        elif policy is not None and policy.quorum != NONE:
            checked.fail("no checkpoint has been published: none is cosigned as the policy asks")
        with TreeStore(engine).snapshot() as snap:
            verifier = LogVerifier(key.raw, trusted=trusted, anchors=anchors, counts=True)
            report = verifier.run(interleave(snap.events(), snap.heads(), *snap.count_spans()))
    finally:
        engine.dispose()
    if trusted is not None:
        anchors.insert(0, Anchor(trusted.tree_size, trusted.root_hash))
    status = _print_report(report, anchors=anchors)
    _print_outcome(checked)
    if not checked.ok:
        print("UNTRUSTED: the log's latest checkpoint does not meet the policy")
        return max(status, 1)
    return status


def _verify_tiles(
    args: argparse.Namespace,
    key: PublicKey,
    policy: Policy | None,
    saved: SignedCheckpoint | None,
) -> int:
    token = args.token
    if args.token_file:
        token = Path(args.token_file).read_text().strip()
    client = LogClient(args.url, token)
    if saved is None:
        outcome = check_published(client.checkpoint(), key, policy)
    else:
        outcome = check_extends(client, saved, key, policy)
    _print_outcome(outcome)
    return 0 if outcome.ok else 1


def _cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    since = parse_timestamp(args.since) if args.since else None
    until = parse_timestamp(args.until) if args.until else None
    engine = create_role_engine(settings, "reader", pool_size=1)
    out = sys.stdout.buffer if args.out in (None, "-") else open(args.out, "wb")  # noqa: SIM115
    try:
        with TreeStore(engine).snapshot() as snap:
            written = write_export(snap, out, since=since, until=until)
    finally:
        if out is not sys.stdout.buffer:
            out.close()
        engine.dispose()
    print(f"exported {written} events", file=sys.stderr)
    return 0


def _cmd_witness(settings: Settings, args: argparse.Namespace) -> int:
    from auditlog.log import configure_logging  # noqa: PLC0415 - CLI only
    from auditlog.services.witness import WitnessService  # noqa: PLC0415
    from auditlog.storage.witness_state import StateFileError, WitnessState  # noqa: PLC0415
    from auditlog.witness_app import create_witness_app, serve  # noqa: PLC0415

    try:
        signer = NoteSigner(args.name, load_private_key(Path(args.key)), COSIGNATURE_V1)
        logs = [log.key for log in Policy.read(Path(args.policy)).logs] if args.policy else []
        for spec in args.log or []:
            vkey = read_key(spec).vkey
            if vkey is None:
                raise ValueError(f"--log {spec[:60]}: a log is given by its verifier key")
            logs.append(vkey)
        if not logs:
            raise ValueError("no log to witness: give --log VKEY or --policy FILE")
        host, _, port = args.listen.rpartition(":")
        state = WitnessState(Path(args.state))
    except (OSError, ValueError, StateFileError) as exc:
        print(f"auditlog: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(f"witness {signer.verifier.text()}", flush=True)
    try:
        serve(create_witness_app(WitnessService(signer, logs, state)), host, int(port))
    finally:
        state.close()
    return 0


def _cmd_publish(settings: Settings, args: argparse.Namespace) -> int:
    from auditlog.runtime import checkpoint_publisher  # noqa: PLC0415 - CLI only

    publisher = checkpoint_publisher(settings)
    report = publisher.run_once(resume=args.resume)
    if not report.ran:
        print("another publication round is running; try again in a moment")
        return 0
    if report.published is not None:
        print(f"published the checkpoint at size {report.published}")
    for witness in report.cosigned:
        print(f"cosigned by {witness}")
    for witness, reason in report.failed:
        print(f"not cosigned by {witness}: {reason}")
    for witness in report.refused:
        print(f"REFUSED by {witness}: it saw a history this checkpoint does not extend")
    if report.stopped:
        print("publication is stopped: a witness refused the latest checkpoint")
        return 1
    print(f"latest checkpoint: size {report.latest}")
    return 0


def _key_admin(settings: Settings) -> tuple[KeyAdmin, Callable[[], None]]:
    """Key administration as the owner, each change also recorded in the log."""
    from auditlog.runtime import async_redis_client, limits, stream_appender  # noqa: PLC0415

    engine = create_role_engine(settings, "owner", pool_size=1)
    operator = f"{getpass.getuser()}@{socket.gethostname()}"

    async def recorded(what: str, key: ApiKey) -> bool:
        client = async_redis_client(settings, "api")
        try:
            ingest = IngestService(
                stream_appender(settings, client),
                limits(settings),
                max_events=settings.max_events_per_request,
            )
            return await SelfAudit(ingest, strict_reads=False).key_changed(what, key, operator)
        finally:
            await client.aclose()

    def record(what: str, key: ApiKey) -> None:
        if not asyncio.run(recorded(what, key)):
            print(
                "auditlog: warning: the change is made but could not be recorded in the log"
                " (Redis unavailable); it is in this command's error log",
                file=sys.stderr,
            )

    def close() -> None:
        engine.dispose()

    return KeyAdmin(KeyStore(engine), on_change=record), close


def _keys_create(admin: KeyAdmin, settings: Settings, args: argparse.Namespace) -> int:
    try:
        created = admin.create(
            args.name, args.scope, args.service or [], rate_per_s=args.rate, burst=args.burst
        )
    except (ValueError, KeyExists) as exc:
        reason = f"a key named {exc} exists" if isinstance(exc, KeyExists) else exc
        print(f"auditlog: {reason}", file=sys.stderr)
        return 2
    services = ", ".join(created.key.services) or "-"
    print(
        f"created key {created.key.name!r}: scope {created.key.scope}, services {services}."
        " The token is shown once; store it now:"
    )
    print(created.token)
    return 0


def _keys_list(admin: KeyAdmin, settings: Settings, args: argparse.Namespace) -> int:
    print("name\tscope\tservices\trate/s\tburst\tcreated\trevoked")
    for key in admin.list():
        fields = (
            key.name,
            key.scope,
            ",".join(key.services) or "-",
            key.rate_per_s or "default",
            key.burst or "default",
            key.created_at,
            key.revoked_at or "-",
        )
        print("\t".join(str(v) for v in fields))
    return 0


def _keys_revoke(admin: KeyAdmin, settings: Settings, args: argparse.Namespace) -> int:
    if not admin.revoke(args.name):
        print(f"auditlog: no live key named {args.name!r}", file=sys.stderr)
        return 2
    print(
        f"revoked {args.name!r}; API processes stop accepting it within {settings.key_cache_s:g} s"
    )
    return 0


def _keys_limit(admin: KeyAdmin, settings: Settings, args: argparse.Namespace) -> int:
    if not admin.set_limits(args.name, args.rate, args.burst):
        print(f"auditlog: no live key named {args.name!r}", file=sys.stderr)
        return 2
    print(f"key {args.name!r}: rate {args.rate or 'default'}/s, burst {args.burst or 'default'}")
    return 0


_KEY_COMMANDS = {
    "create": _keys_create,
    "list": _keys_list,
    "revoke": _keys_revoke,
    "limit": _keys_limit,
}


def _cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    admin, close = _key_admin(settings)
    try:
        return _KEY_COMMANDS[args.keys_command](admin, settings, args)
    finally:
        close()


def _cmd_redis_acl(settings: Settings, args: argparse.Namespace) -> int:
    from auditlog.storage.redis_users import acl_file, parse_version  # noqa: PLC0415 - CLI only

    try:
        text = acl_file(settings, parse_version(args.redis_version))
    except (ValueError, SettingsError) as exc:
        print(f"auditlog: {exc}", file=sys.stderr)
        return 2
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text)
        print(f"wrote the ACL users of {settings.redis_prefix!r} to {args.out}", file=sys.stderr)
    return 0


def _cmd_nginx_config(settings: Settings, args: argparse.Namespace) -> int:
    knobs = {}
    for assignment in args.set or []:
        name, equals, value = assignment.partition("=")
        if not equals or not value:
            print(f"auditlog: --set {assignment}: expected NAME=VALUE", file=sys.stderr)
            return 2
        knobs[name] = value
    topology = Topology(
        listen=args.listen,
        api=args.api,
        flower=args.flower,
        access_log=args.access_log,
        knobs=knobs,
    )
    try:
        print(write_config(settings, topology, args.out))
    except ValueError as exc:
        print(f"auditlog: {exc}", file=sys.stderr)
        return 2
    return 0


def _add_key_commands(sub: Any) -> None:
    p = sub.add_parser("keys", help="API keys: create, list, revoke, limit")
    keys = p.add_subparsers(dest="keys_command", required=True)
    k = keys.add_parser("create", help="create a key; its token is printed once, last")
    k.add_argument("--name", required=True)
    k.add_argument("--scope", required=True, choices=["write", "read", "admin"])
    k.add_argument(
        "--service",
        action="append",
        help="a service a write key may send events of (repeat for more)",
    )
    k.add_argument("--rate", type=float, help="requests per second (default: the setting)")
    k.add_argument("--burst", type=int, help="bucket size (default: the setting)")
    keys.add_parser("list", help="every key, without secrets")
    k = keys.add_parser("revoke", help="stop a key working (within seconds, everywhere)")
    k.add_argument("name")
    k = keys.add_parser("limit", help="set a key's rate limit (omit both: back to defaults)")
    k.add_argument("name")
    k.add_argument("--rate", type=float)
    k.add_argument("--burst", type=int)


def _add_transparency_commands(
    sub: Any, commands: dict[str, Callable[[Settings, argparse.Namespace], int]]
) -> None:
    """verify, public-key, witness, publish."""
    p = sub.add_parser("verify", help="recompute the log and check every signed tree head")
    p.add_argument("--file", help="verify an `auditlog export` file instead of the database")
    p.add_argument(
        "--trusted-head",
        help="a tree head kept from earlier (JSON, as GET /v1/integrity/tree-head returns "
        "it): the log must have grown from it",
    )
    p.add_argument(
        "--public-key",
        help="the log's public key: base64, PEM, its verifier key (name+keyid+base64), or a "
        "file holding one; by default the one from the settings",
    )
    p.add_argument(
        "--checkpoint",
        help="a checkpoint saved from GET /v1/log/checkpoint: the log must extend it (with "
        "--url: proved from the log's tiles alone)",
    )
    p.add_argument(
        "--witness",
        action="append",
        help="a witness's verifier key (or a file holding it); repeat for more",
    )
    p.add_argument(
        "--quorum",
        type=int,
        help="how many of the --witness keys must have cosigned the checkpoint (default: all)",
    )
    p.add_argument("--policy", help="a C2SP tlog-policy file: logs, witnesses, quorum")
    p.add_argument(
        "--url",
        help="the log's API (https://host): check its checkpoint, and with --checkpoint its "
        "consistency, from its checkpoint and tiles instead of the database",
    )
    p.add_argument("--token", help="with --url: a read key's token (if tiles are not public)")
    p.add_argument("--token-file", help="with --url: a file holding the token")
    commands["verify"] = _cmd_verify

    p = sub.add_parser("public-key", help="the log's public key in every form auditors use")
    p.add_argument("--key", help="a key file (default: the settings' key)")
    p.add_argument(
        "--witness",
        metavar="NAME",
        help="print the cosigning verifier key of a witness named NAME whose private key is --key",
    )
    commands["public-key"] = _cmd_public_key

    p = sub.add_parser(
        "witness", help="run a transparency log witness (C2SP tlog-witness) with a state file"
    )
    p.add_argument("--name", required=True, help="the witness's key name, e.g. example.com/w1")
    p.add_argument("--key", required=True, help="its Ed25519 private key (auditlog keygen --out)")
    p.add_argument("--state", required=True, help="its state file (created if missing)")
    p.add_argument("--log", action="append", help="a log's verifier key to witness (repeat)")
    p.add_argument("--policy", help="a tlog-policy file whose `log` lines name the logs")
    p.add_argument("--listen", default="127.0.0.1:7380", help="host:port (default 127.0.0.1:7380)")
    commands["witness"] = _cmd_witness

    p = sub.add_parser(
        "publish", help="run one checkpoint publication round now (the worker runs them)"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="publish and submit even though a witness refused the latest checkpoint",
    )
    commands["publish"] = _cmd_publish


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="auditlog", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    commands: dict[str, Callable[[Settings, argparse.Namespace], int]] = {}

    p = sub.add_parser(
        "setup-db",
        help="create the owner role, database and extension "
        "(needs AUDITLOG_ADMIN_DATABASE_URL, a superuser)",
    )
    commands["setup-db"] = _cmd_setup_db

    p = sub.add_parser("migrate", help="run the Alembic migrations as the owner role")
    p.add_argument("revision", nargs="?", default="head")
    p.add_argument("--setup", action="store_true", help="run setup-db first")
    commands["migrate"] = _cmd_migrate

    p = sub.add_parser("dead-letters", help="list events the writer could not store")
    p.add_argument("--limit", type=int, default=100)
    commands["dead-letters"] = _cmd_dead_letters

    sub.add_parser("queue", help="how many events wait in the stream")
    commands["queue"] = _cmd_queue

    p = sub.add_parser("keygen", help="create the Ed25519 key that signs tree heads")
    p.add_argument("--out", help="where to write it (default: AUDITLOG_SIGNING_KEY_PATH)")
    p.add_argument(
        "--if-missing",
        action="store_true",
        help="do nothing (print the public key) if the key exists",
    )
    commands["keygen"] = _cmd_keygen

    _add_transparency_commands(sub, commands)

    p = sub.add_parser("export", help="write the log (or a piece) as NDJSON with its tree heads")
    p.add_argument("--since", help="first event with occurred_at >= since (RFC 3339)")
    p.add_argument("--until", help="last event with occurred_at < until (RFC 3339)")
    p.add_argument("--out", help="file to write (default: standard output)")
    commands["export"] = _cmd_export

    _add_key_commands(sub)
    commands["keys"] = _cmd_keys
    p = sub.add_parser(
        "redis-acl",
        help="write the ACL file of the Redis users (api, writer, broker, flower) "
        "from AUDITLOG_REDIS_*_PASSWORD (make run, docker compose)",
    )
    p.add_argument("--out", type=Path, help="file to write (default: standard output)")
    p.add_argument(
        "--redis-version",
        required=True,
        help="the server's version (`redis-server --version`), e.g. 7.0.15: rules that name "
        "commands it lacks are left out",
    )
    commands["redis-acl"] = _cmd_redis_acl
    p = sub.add_parser(
        "nginx-config", help="render deploy/nginx/ for a local topology (make run, tests)"
    )
    p.add_argument("--out", type=Path, required=True, help="nginx's prefix directory")
    p.add_argument("--listen", default="127.0.0.1:8080")
    p.add_argument(
        "--api", action="append", required=True, help="host:port of an API instance (twice)"
    )
    p.add_argument("--flower", default="127.0.0.1:5555")
    p.add_argument("--access-log", default="/dev/stdout")
    p.add_argument(
        "--set",
        action="append",
        metavar="NAME=VALUE",
        help="change a knob from its default (repeat for more): "
        + "; ".join(f"{name} ({knob.default})" for name, knob in KNOBS.items()),
    )
    commands["nginx-config"] = _cmd_nginx_config

    parser.set_defaults(_commands=commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"auditlog: {exc}", file=sys.stderr)
        return 2
    handler: Callable[[Settings, argparse.Namespace], int] = args._commands[args.command]
    return handler(settings, args)


if __name__ == "__main__":
    sys.exit(main())
