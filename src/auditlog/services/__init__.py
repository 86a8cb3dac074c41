"""Domain services: no HTTP, no Celery; used unchanged by controllers, tasks and the CLI."""
