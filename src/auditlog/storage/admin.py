"""Database administration: what a migration cannot do, and the migrations themselves.

A superuser (AUDITLOG_ADMIN_DATABASE_URL) creates the owner role, the database and its
extension; the owner runs Alembic's migrations, which create the writer and reader roles.
Role passwords travel as SCRAM-SHA-256 verifiers computed here (libpq's
PQencryptPasswordConn, through psycopg), so the clear password never reaches the server: a
statement log (log_statement = ddl) keeps a verifier, from which no one can log in.
"""

from __future__ import annotations

from collections.abc import Mapping

from alembic import command
from alembic.config import Config
from psycopg import sql
from sqlalchemy import Connection, text

from auditlog.settings import ROLE_NAMES, Role, Settings
from auditlog.storage.engine import create_admin_engine, create_role_engine


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(settings.migrations_dir))
    config.attributes["settings"] = settings
    return config


def _execute(conn: Connection, statement: sql.Composable) -> None:
    """A utility statement composed with psycopg's quoting (they take no bind parameters)."""
    raw = conn.connection.driver_connection
    assert raw is not None
    raw.execute(statement)


def scram_verifier(conn: Connection, role_name: str, password: str) -> str:
    """The SCRAM-SHA-256 verifier of a password, computed on this side of the connection."""
    raw = conn.connection.driver_connection
    assert raw is not None
    verifier: bytes = raw.pgconn.encrypt_password(
        password.encode(), role_name.encode(), b"scram-sha-256"
    )
    return verifier.decode()


def _set_passwords(conn: Connection, passwords: Mapping[Role, str]) -> None:
    """Give each role its password (as a verifier); an empty one leaves the role as it is."""
    for role, password in passwords.items():
        if password:
            name = ROLE_NAMES[role]
            _execute(
                conn,
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(name), sql.Literal(scram_verifier(conn, name, password))
                ),
            )


def setup_database(settings: Settings) -> None:
    """As a superuser: the owner role (and its password), the database, the extension."""
    owner = ROLE_NAMES["owner"]
    name = settings.database_name
    admin = create_admin_engine(settings)
    try:
        with admin.connect() as conn:
            if conn.scalar(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": owner}) is None:
                _execute(
                    conn, sql.SQL("CREATE ROLE {} LOGIN CREATEROLE").format(sql.Identifier(owner))
                )
            _set_passwords(conn, {"owner": settings.owner_password})
            exists = conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": name})
            if exists is None:
                _execute(
                    conn,
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(name), sql.Identifier(owner)
                    ),
                )
    finally:
        admin.dispose()
    target = create_admin_engine(settings, database=name)
    try:
        with target.connect() as conn:
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS timescaledb"))
    finally:
        target.dispose()


def migrate(settings: Settings, revision: str = "head") -> None:
    """As the owner: run the migrations, then give the roles they made their passwords."""
    command.upgrade(alembic_config(settings), revision)
    passwords: dict[Role, str] = {
        "writer": settings.writer_password,
        "reader": settings.reader_password,
    }
    if any(passwords.values()):
        owner = create_role_engine(settings, "owner", pool_size=1)
        try:
            with owner.begin() as conn:
                _set_passwords(conn, passwords)
        finally:
            owner.dispose()


def drop_database(settings: Settings) -> None:
    """As a superuser: drop the database (tests and benchmarks only)."""
    admin = create_admin_engine(settings)
    try:
        with admin.connect() as conn:
            _execute(
                conn,
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(settings.database_name)
                ),
            )
    finally:
        admin.dispose()
