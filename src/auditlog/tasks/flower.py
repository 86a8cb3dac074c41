"""Flower's target: `celery -A auditlog.tasks.flower flower`. The broker as Flower's own
Redis user (it may read the queues and inspect the workers, not queue tasks)."""

from auditlog.log import configure_logging
from auditlog.settings import Settings
from auditlog.tasks.celery import AuditlogCelery

settings = Settings.from_env()
configure_logging(settings)
app = AuditlogCelery(settings, role="flower")
