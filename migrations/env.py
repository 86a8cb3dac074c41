"""Alembic environment: always runs as the owner role, one transaction per migration."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine, text

from auditlog.settings import Settings
from auditlog.storage.engine import create_role_engine
from auditlog.storage.schema import metadata

config = context.config
settings: Settings = config.attributes.get("settings") or Settings.from_env()


def include_object(obj, name, type_, reflected, compare_to):  # type: ignore[no-untyped-def]
    """Compare only what we declare; TimescaleDB keeps its chunks in schemas of its own."""
    return getattr(obj, "schema", None) in (None, "public")


def run_migrations_offline() -> None:
    context.configure(
        url=settings.url_for("owner").render_as_string(hide_password=False),
        target_metadata=metadata,
        literal_binds=True,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_role_engine(settings, "owner", pool_size=1)
    try:
        _run_online(engine)
    finally:
        engine.dispose()  # a failed migration too: its connection is closed, not collected


def _run_online(engine: Engine) -> None:
    with engine.connect() as connection:
        # A migration waits at most 5 s for a lock (then fails, rather than queue every
        # writer behind it) and at most 10 min for any one statement.
        connection.execute(text("SET lock_timeout = '5s'"))
        connection.execute(text("SET statement_timeout = '10min'"))
        connection.commit()
        context.configure(
            connection=connection,
            target_metadata=metadata,
            include_object=include_object,
            transaction_per_migration=True,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
