"""The Celery worker's target: `celery -A auditlog.tasks.worker worker`. Nothing else."""

from auditlog.log import configure_logging
from auditlog.settings import Settings
from auditlog.tasks.celery import create_celery

settings = Settings.from_env()
configure_logging(settings)
app = create_celery(settings)
