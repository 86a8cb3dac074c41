"""PostgreSQL with passwords required: the suite's cluster asks every connection for its
role's password (scram-sha-256), and the passwords were set without ever reaching it."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from falcon import testing
from psycopg import sql
from sqlalchemy import Engine, text

from auditlog.settings import ROLE_NAMES, Role, Settings
from tests import factories
from tests.faults.servers import PrivatePostgres
from tests.helpers import ROOT, wait_for
from tests.integration.conftest import post, wait_stored

ROLES: tuple[Role, ...] = ("owner", "writer", "reader")


def connect(settings: Settings, role: Role, password: str | None) -> Any:
    url = settings.url_for(role)
    return psycopg.connect(
        host=url.host,
        port=url.port,
        dbname=url.database,
        user=url.username,
        connect_timeout=3,
        **({} if password is None else {"password": password}),
    )


class TestRolePasswords:
    """Each app role logs in with its password and with nothing else."""

    @pytest.mark.parametrize("role", ROLES)
    def test_without_its_password_a_role_cannot_connect(self, settings: Settings, role: Role):
        with pytest.raises(psycopg.OperationalError, match="no password supplied"):
            connect(settings, role, None)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            connect(settings, role, "not-the-password")
        other = "reader" if role != "reader" else "writer"
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            connect(settings, role, settings.url_for(other).password)  # type: ignore[arg-type]

    @pytest.mark.parametrize("role", ROLES)
    def test_with_it_the_role_connects_as_itself(self, settings: Settings, role: Role):
        with connect(settings, role, settings.url_for(role).password) as conn:  # type: ignore[arg-type]
            assert conn.execute("SELECT current_user").fetchone() == (ROLE_NAMES[role],)

    def test_the_server_keeps_verifiers_and_never_saw_a_password(
        self, settings: Settings, cluster: PrivatePostgres
    ):
        with psycopg.connect(cluster.admin_url) as conn:
            stored = dict(
                conn.execute(
                    "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY(%s)",
                    (list(ROLE_NAMES.values()),),
                ).fetchall()
            )
        assert set(stored) == set(ROLE_NAMES.values())
        assert all(v.startswith("SCRAM-SHA-256$4096:") for v in stored.values()), stored
        # The cluster logs every DDL statement: the ALTER ROLEs are there, with verifiers.
        log = cluster.log_path.read_text(errors="replace")
        assert log.count("PASSWORD 'SCRAM-SHA-256$") >= len(ROLES)
        for role in ROLES:
            password = settings.url_for(role).password
            assert password
            assert password not in log, role

    def test_the_app_and_a_writer_work_with_them(self, api: testing.TestClient, owner_db: Engine):
        sent = factories.event()
        assert post(api, sent).status_code == 202
        wait_stored(owner_db, [sent["id"]])
        assert api.simulate_get(f"/v1/events/{sent['id']}").json["id"] == sent["id"]
        with owner_db.connect() as conn:
            users = conn.scalars(
                text("SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = :d"),
                {"d": conn.engine.url.database},
            ).all()
        assert {"auditlog_reader", "auditlog_writer"} <= set(users)


class TestOperatorAdvice:
    """The pg_hba lines scripts/setup.sh tells the operator to add do require the passwords
    of the app roles, and leave every other role as it was."""

    def test_the_printed_pg_hba_lines_require_the_app_roles_passwords(self, settings: Settings):
        script = (ROOT / "scripts" / "setup.sh").read_text()
        lines = [
            line.strip()
            for line in script.splitlines()
            if line.strip().startswith(("local ", "host ")) and "scram-sha-256" in line
        ]
        assert len(lines) == 2
        server = PrivatePostgres().init()  # trust for everyone, as this machine's
        server.start()
        try:
            with psycopg.connect(server.admin_url, autocommit=True) as conn:
                for name in ROLE_NAMES.values():
                    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
                conn.execute("ALTER ROLE auditlog_writer PASSWORD 'the-writers-password'")
            hba = server.data / "pg_hba.conf"
            hba.write_text("\n".join(lines) + "\n" + hba.read_text())
            with psycopg.connect(server.admin_url, autocommit=True) as conn:
                conn.execute("SELECT pg_reload_conf()")

            def writer(password: str | None) -> Any:
                return psycopg.connect(
                    host="127.0.0.1",
                    port=server.port,
                    dbname="postgres",
                    user="auditlog_writer",
                    connect_timeout=3,
                    **({} if password is None else {"password": password}),
                )

            wait_for(lambda: _refused(writer), what="pg_hba reloaded")
            with writer("the-writers-password") as conn:
                assert conn.execute("SELECT current_user").fetchone() == ("auditlog_writer",)
            with psycopg.connect(server.admin_url) as conn:  # others: as before (trust)
                assert conn.execute("SELECT 1").fetchone() == (1,)
        finally:
            server.remove()


def _refused(connect: Any) -> bool:
    try:
        connect(None).close()
    except psycopg.OperationalError as exc:
        return "no password supplied" in str(exc)
    return False
