"""Flower's settings: `celery -A auditlog.tasks.worker flower --conf=deploy/flowerconfig.py`.

Flower (tornado) reads the names below that match its options. The credentials come from
the auditlog settings (AUDITLOG_FLOWER_USER, AUDITLOG_FLOWER_PASSWORD); without a password
Flower does not start. The address and port come from the command line.
"""

from auditlog.settings import Settings, SettingsError

_settings = Settings.from_env()
if not _settings.flower_password:
    raise SettingsError(
        "AUDITLOG_FLOWER_PASSWORD is empty: Flower is only served behind basic auth "
        "(`make run` keeps a generated one in .env)"
    )

basic_auth = [f"{_settings.flower_user}:{_settings.flower_password}"]
# Served under /flower/, on its own port and behind nginx alike (nginx passes the path on).
url_prefix = "flower"
# Workers gone for a minute (stopped, scaled down) leave the dashboard.
purge_offline_workers = 60
