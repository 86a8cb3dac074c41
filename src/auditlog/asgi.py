"""gunicorn's target: `gunicorn -k <uvicorn worker> auditlog.asgi:app`. Nothing else."""

from auditlog.app import create_app
from auditlog.log import configure_logging
from auditlog.settings import Settings

settings = Settings.from_env()
configure_logging(settings)
app = create_app(settings)
