"""The `auditlog` command: set up the database, migrate it, inspect the pipeline."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text

from auditlog.settings import ROLE_NAMES, Role, Settings, SettingsError


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


def _cmd_nginx_config(settings: Settings, args: argparse.Namespace) -> int:
    from auditlog.nginx import Topology, write_config  # noqa: PLC0415 - CLI only

    topology = Topology(
        listen=args.listen, api=args.api, flower=args.flower, access_log=args.access_log
    )
    print(write_config(settings, topology, args.out))
    return 0


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
