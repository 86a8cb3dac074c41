"""Settings come from AUDITLOG_* variables, and a bad one fails at start-up, by name."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest

from auditlog.settings import Settings, SettingsError


class TestFromEnv:
    def test_defaults(self):
        settings = Settings.from_env({})
        assert settings.database_name == "auditlog"
        assert settings.celery_broker_url == settings.redis_url

    def test_values_are_parsed(self):
        settings = Settings.from_env(
            {"AUDITLOG_WRITER_SLOTS": "4", "OTHER": "x", "AUDITLOG_BROKER_URL": "redis://h:1/2"}
        )
        assert settings.writer_slots == 4
        assert settings.celery_broker_url == "redis://h:1/2"

    def test_unknown_variable_is_an_error(self):
        with pytest.raises(SettingsError, match="AUDITLOG_WRITER_SLOT"):
            Settings.from_env({"AUDITLOG_WRITER_SLOT": "4"})

    def test_bad_value_names_the_variable(self):
        with pytest.raises(SettingsError, match="AUDITLOG_MAX_BODY_BYTES"):
            Settings.from_env({"AUDITLOG_MAX_BODY_BYTES": "lots"})

    def test_role_urls(self):
        settings = Settings.from_env(
            {
                "AUDITLOG_DATABASE_URL": "postgresql://db.internal:6432/audit",
                "AUDITLOG_WRITER_PASSWORD": "s3cret",
            }
        )
        writer = settings.url_for("writer")
        assert (writer.username, writer.password, writer.host, writer.port, writer.database) == (
            "auditlog_writer",
            "s3cret",
            "db.internal",
            6432,
            "audit",
        )
        assert settings.url_for("reader").password is None
        assert writer.drivername == "postgresql+psycopg"

    def test_strict_acknowledgement_is_opt_in(self):
        assert Settings.from_env({}).ack_fsync is False
        settings = Settings.from_env(
            {"AUDITLOG_ACK_FSYNC": "true", "AUDITLOG_ACK_FSYNC_TIMEOUT_S": "0.5"}
        )
        assert (settings.ack_fsync, settings.ack_fsync_timeout_s) == (True, 0.5)
        with pytest.raises(SettingsError, match="AUDITLOG_ACK_FSYNC_TIMEOUT_S"):
            Settings.from_env({"AUDITLOG_ACK_FSYNC_TIMEOUT_S": "0"})

    def test_redis_urls_per_role(self):
        settings = Settings.from_env(
            {
                "AUDITLOG_REDIS_URL": "redis://cache.internal:6380/2",
                "AUDITLOG_BROKER_URL": "redis://broker.internal:6381/0",
                "AUDITLOG_REDIS_API_PASSWORD": "a/b@c:d",
                "AUDITLOG_REDIS_FLOWER_PASSWORD": "f",
            }
        )
        assert (
            settings.redis_url_for("api")
            == "redis://auditlog-api:a%2Fb%40c%3Ad@cache.internal:6380/2"
        )
        assert settings.redis_url_for("writer") == "redis://cache.internal:6380/2"  # no password
        assert (
            settings.redis_url_for("flower") == "redis://auditlog-flower:f@broker.internal:6381/0"
        )
        assert settings.celery_broker_url == "redis://broker.internal:6381/0"

    def test_redis_keys_are_prefixed(self):
        assert Settings.from_env({"AUDITLOG_REDIS_PREFIX": "x"}).key("events") == "x:events"

    def test_metrics_dir_comes_from_prometheus_own_variable(self):
        settings = Settings.from_env({"PROMETHEUS_MULTIPROC_DIR": "/srv/metrics"})
        assert str(settings.metrics_dir) == "/srv/metrics"
        assert Settings.from_env({}).metrics_dir is None

    def test_tail_and_stream_bounds(self):
        settings = Settings.from_env(
            {"AUDITLOG_TAIL_SIZE": "50", "AUDITLOG_FOLLOW_MAX_PER_PROCESS": "3"}
        )
        assert (settings.tail_size, settings.follow_max_per_process) == (50, 3)
        with pytest.raises(SettingsError, match="AUDITLOG_TAIL_SIZE"):
            Settings.from_env({"AUDITLOG_TAIL_SIZE": "0"})
        with pytest.raises(SettingsError, match="AUDITLOG_FOLLOW_MAX_S"):
            Settings.from_env({"AUDITLOG_FOLLOW_MAX_S": "0"})


class TestReadme:
    """The README's settings table is what operators read: every setting is in it, with the
    default the code has."""

    # Rows that name several variables at once, or the library's own variable.
    GROUPED: ClassVar[dict[str, str]] = {
        "writer_password": "_WRITER_PASSWORD",
        "reader_password": "_READER_PASSWORD",
        "redis_writer_password": "`_WRITER_`",
        "redis_broker_password": "`_BROKER_`",
        "redis_flower_password": "`_FLOWER_PASSWORD`",
        "flower_password": "AUDITLOG_FLOWER_PASSWORD",
        "metrics_dir": "PROMETHEUS_MULTIPROC_DIR",
    }

    @pytest.fixture
    def rows(self) -> dict[str, str]:
        """First column (the variables) -> second (the default) of the table's rows."""
        readme = (Path(__file__).parents[2] / "README.md").read_text()
        rows = {}
        for line in readme.splitlines():
            cells = [cell.strip() for cell in line.split("|")[1:-1]]
            if len(cells) == 3 and cells[0].startswith("`AUDITLOG_"):
                rows[cells[0]] = cells[1]
        return rows

    def test_every_setting_is_documented(self, rows):
        names = " ".join(rows)
        missing = [
            name
            for name in Settings.model_fields
            if f"`AUDITLOG_{name.upper()}`" not in names
            and self.GROUPED.get(name, "\0") not in names + " PROMETHEUS_MULTIPROC_DIR"
        ]
        assert not missing, f"settings missing from README's table: {missing}"

    def test_documented_defaults_are_the_code_defaults(self, rows):
        wrong = {}
        for name, field in Settings.model_fields.items():
            default = rows.get(f"`AUDITLOG_{name.upper()}`", "")
            if not default.startswith("`") or field.default is None:
                continue
            said = default.split("`")[1]
            if isinstance(field.default, bool):
                same = said == str(field.default).lower()
            elif isinstance(field.default, int | float):
                same = float(said) == field.default
            else:
                same = said == str(field.default)
            if not same:
                wrong[name] = (said, field.default)
        assert not wrong, f"README defaults differ from the code's: {wrong}"
