"""The Celery app: created once per process with the settings it runs under."""

from __future__ import annotations

from functools import cached_property

from celery import Celery

from auditlog.runtime import WriterRuntime, checkpoint_publisher, redis_client
from auditlog.settings import RedisRole, Settings
from auditlog.storage.leases import SlotLeases
from auditlog.storage.redis_users import RedisKeys
from auditlog.tasks.checkpoints import PublisherThread, poll_interval


class AuditlogCelery(Celery):
    """A Celery app that carries its settings and builds its writer lazily, after the fork.

    It connects to the broker as `role`'s Redis user: the worker's (broker) or Flower's.
    """

    def __init__(self, settings: Settings, role: RedisRole = "broker"):
        super().__init__("auditlog", broker=settings.redis_url_for(role), set_as_current=True)
        self.settings = settings
        keys = RedisKeys.of(settings)
        queue = keys.tasks
        self.conf.update(
            task_default_queue=queue,
            task_ignore_result=True,  # Flower reads results from task events, not a backend
            task_acks_late=True,
            task_reject_on_worker_lost=True,
            worker_prefetch_multiplier=1,
            worker_concurrency=settings.writer_slots,
            worker_send_task_events=True,
            task_send_sent_event=True,
            worker_hijack_root_logger=False,
            worker_redirect_stdouts=False,
            broker_connection_retry_on_startup=True,
            # Every key and channel of the broker under one prefix: its ACL user may touch
            # those and nothing else (kombu's own names, `unacked` and `_kombu.binding.*`,
            # are otherwise shared by every deployment on the Redis).
            broker_transport_options={"visibility_timeout": 3600, "global_keyprefix": keys.broker},
            # When the broker connection drops (a Redis restart), a running drain keeps
            # going and waits Redis out (services/writer.py) rather than being cancelled:
            # its lease stays valid and its chain goes on when Redis answers. (Said
            # explicitly: Celery 6 turns the default around.)
            worker_cancel_long_running_tasks_on_connection_loss=False,
        )

    @cached_property
    def writer_runtime(self) -> WriterRuntime:
        """Engines and clients for this (pool) process; never built in the parent."""
        return WriterRuntime.build(self.settings)

    @cached_property
    def publisher(self) -> PublisherThread:
        """This pool process's checkpoint publisher; `ensure_publisher` starts it."""
        return PublisherThread(
            checkpoint_publisher(self.settings),
            poll_interval(self.settings.checkpoint_interval_s),
        )

    def ensure_publisher(self) -> None:
        """Start the publisher beside this pool process's writer, once (never in the parent)."""
        if not self.publisher.is_alive() and self.publisher.ident is None:
            self.publisher.start()

    @cached_property
    def watchdog_leases(self) -> SlotLeases:
        """The slot leases as the worker's main process sees them."""
        return WriterRuntime.leases_for(self.settings, redis_client(self.settings, "writer"))


def create_celery(settings: Settings) -> AuditlogCelery:
    from auditlog.tasks import metrics, writer  # noqa: PLC0415 - tasks register on the app they get

    app = AuditlogCelery(settings)
    writer.register(app)
    metrics.register(app)
    return app
