"""The `auditlog` command: set up the database, migrate it, inspect the pipeline."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy import exc as sa_exc

from auditlog.canonical import parse_timestamp
from auditlog.integrity.export import ExportFormatError, read_export, write_export
from auditlog.integrity.heads import TreeHead, b64, generate_key, load_public_key
from auditlog.integrity.verify import LogVerifier, VerifyReport, interleave
from auditlog.nginx import KNOBS, Topology, write_config
from auditlog.services.audit import SelfAudit
from auditlog.services.auth import KeyAdmin
from auditlog.services.ingest import IngestService
from auditlog.settings import ROLE_NAMES, Role, Settings, SettingsError
from auditlog.storage.keys import ApiKey, KeyExists, KeyStore
from auditlog.storage.tree import TreeStore


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(settings.migrations_dir))
    config.attributes["settings"] = settings
    return config


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def setup_database(settings: Settings) -> None:
    """As a superuser: the owner role, the database and the TimescaleDB extension."""
    owner = ROLE_NAMES["owner"]
    name = settings.database_name
    admin = create_engine(settings.admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if conn.scalar(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": owner}) is None:
            conn.execute(text(f"CREATE ROLE {owner} LOGIN CREATEROLE"))
        if settings.owner_password:
            conn.execute(
                text(f"ALTER ROLE {owner} PASSWORD {_quote_literal(settings.owner_password)}")
            )
        exists = conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": name})
        if exists is None:
            conn.execute(text(f'CREATE DATABASE "{name}" OWNER {owner}'))
    admin.dispose()
    target = create_engine(settings.admin_url.set(database=name), isolation_level="AUTOCOMMIT")
    with target.connect() as conn:
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS timescaledb"))
    target.dispose()


def migrate(settings: Settings, revision: str = "head") -> None:
    """As the owner: run the migrations, then give the roles their passwords, if any."""
    command.upgrade(alembic_config(settings), revision)
    passwords: dict[Role, str] = {
        "writer": settings.writer_password,
        "reader": settings.reader_password,
    }
    if any(passwords.values()):
        engine = create_engine(settings.url_for("owner"))
        with engine.begin() as conn:
            for role, password in passwords.items():
                if password:
                    conn.execute(
                        text(f"ALTER ROLE {ROLE_NAMES[role]} PASSWORD {_quote_literal(password)}")
                    )
        engine.dispose()


def drop_database(settings: Settings) -> None:
    """As a superuser: drop the database (tests and `make clean` only)."""
    admin = create_engine(settings.admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{settings.database_name}" WITH (FORCE)'))
    admin.dispose()


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

    stream = event_stream(settings, redis_client(settings))
    letters = stream.dead_letters(args.limit)
    print(f"{stream.dead_letter_count()} dead-lettered entries")
    for letter in letters:
        payload = (letter.payload or b"").decode(errors="replace")[:200]
        print(f"{letter.entry_id}\t{letter.error}\t{payload}")
    return 0


def _cmd_queue(settings: Settings, args: argparse.Namespace) -> int:
    from auditlog.runtime import event_stream, redis_client  # noqa: PLC0415 - CLI only

    stream = event_stream(settings, redis_client(settings))
    print(f"waiting or being written: {stream.depth()}")
    print(f"dead-lettered: {stream.dead_letter_count()}")
    return 0


def _cmd_keygen(settings: Settings, args: argparse.Namespace) -> int:
    path = Path(args.out) if args.out else settings.signing_key_path
    if path.exists():
        if args.if_missing:
            print(b64(load_public_key(path)))
            return 0
        print(f"auditlog: {path} exists; refusing to replace a signing key", file=sys.stderr)
        return 2
    public = generate_key(path)
    print(f"wrote the private key to {path} and the public key to {path}.pub")
    print(b64(public))
    return 0


def _public_key_for(settings: Settings, args: argparse.Namespace) -> bytes:
    if args.public_key:
        return load_public_key(Path(args.public_key))
    from auditlog.runtime import public_key  # noqa: PLC0415 - the CLI builds only what it uses

    return public_key(settings)


def _print_report(report: VerifyReport, *, trusted: TreeHead | None) -> int:
    if report.intact:
        print(
            f"intact: {report.events} events and {report.heads} signed tree heads verified;"
            f" tree size {report.tree_size}"
        )
        if trusted is not None:
            print(f"the log has grown from the trusted tree head at size {trusted.tree_size}")
        else:
            print(
                "(events removed from the end together with the heads covering them show "
                "only against a tree head kept from earlier: --trusted-head)"
            )
        return 0
    first = report.first()
    assert first is not None
    where = f"seq {first.seq}" if first.seq is not None else "a tree head"
    print(f"TAMPERED: the first disagreement is at {where}: {first.message}")
    for finding in report.findings:
        print(f"  [{finding.kind}] {finding.message}")
    print(f"({report.events} events and {report.heads} tree heads read)")
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


def _cmd_verify(settings: Settings, args: argparse.Namespace) -> int:
    """Exit 0: intact; 1: tampered; 2: could not be checked (no input, bad key or file)."""
    try:
        key = _public_key_for(settings, args)
        trusted = _trusted_head(args.trusted_head)
        if args.file:
            with open(args.file, "rb") as lines:
                piece = read_export(lines)
                verifier = LogVerifier(
                    key, start=piece.start, prefix=piece.prefix, end=piece.end, trusted=trusted
                )
                report = verifier.run(piece.items)
        else:
            engine = create_engine(settings.url_for("reader"))
            try:
                with TreeStore(engine).snapshot() as snap:
                    verifier = LogVerifier(key, trusted=trusted)
                    report = verifier.run(interleave(snap.events(), snap.heads()))
            finally:
                engine.dispose()
    except ExportFormatError as exc:
        print(f"auditlog: {args.file}: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"auditlog: {exc}", file=sys.stderr)
        return 2
    except sa_exc.OperationalError as exc:
        print(f"auditlog: the database does not answer: {exc.orig}", file=sys.stderr)
        return 2
    return _print_report(report, trusted=trusted)


def _cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    since = parse_timestamp(args.since) if args.since else None
    until = parse_timestamp(args.until) if args.until else None
    engine = create_engine(settings.url_for("reader"))
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


def _key_admin(settings: Settings) -> tuple[KeyAdmin, Callable[[], None]]:
    """Key administration as the owner, each change also recorded in the log."""
    from auditlog.runtime import async_redis_client, limits, stream_appender  # noqa: PLC0415

    engine = create_engine(settings.url_for("owner"))
    operator = f"{getpass.getuser()}@{socket.gethostname()}"

    async def recorded(what: str, key: ApiKey) -> bool:
        client = async_redis_client(settings)
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

    p = sub.add_parser("verify", help="recompute the log and check every signed tree head")
    p.add_argument("--file", help="verify an `auditlog export` file instead of the database")
    p.add_argument(
        "--trusted-head",
        help="a tree head kept from earlier (JSON, as GET /v1/integrity/tree-head returns "
        "it): the log must have grown from it",
    )
    p.add_argument(
        "--public-key",
        help="the log's public key (PEM or base64); by default the one from the settings",
    )
    commands["verify"] = _cmd_verify

    p = sub.add_parser("export", help="write the log (or a piece) as NDJSON with its tree heads")
    p.add_argument("--since", help="first event with occurred_at >= since (RFC 3339)")
    p.add_argument("--until", help="last event with occurred_at < until (RFC 3339)")
    p.add_argument("--out", help="file to write (default: standard output)")
    commands["export"] = _cmd_export

    _add_key_commands(sub)
    commands["keys"] = _cmd_keys
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
