"""Readiness: do PostgreSQL and Redis answer?"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger("auditlog.health")


class ReadinessService:
    """Runs each named check; a check answers by returning, fails by raising.

    The answer says which backend does not answer, never why: an exception's text names
    hosts, ports and users, which is for the log, not for whoever asks.
    """

    def __init__(self, checks: dict[str, Callable[[], Awaitable[object]]]):
        self._checks = checks

    async def check(self) -> dict[str, str]:
        results = {}
        for name, probe in self._checks.items():
            try:
                await probe()
                results[name] = "ok"
            except Exception as exc:  # any failure means not ready; the log says why
                log.warning("backend not ready", backend=name, error=f"{type(exc).__name__}: {exc}")
                results[name] = "unavailable"
        return results
