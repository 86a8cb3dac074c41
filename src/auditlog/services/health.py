"""Readiness: do PostgreSQL and Redis answer?"""

from __future__ import annotations

from collections.abc import Callable


class ReadinessService:
    """Runs each named check; a check answers by returning, fails by raising."""

    def __init__(self, checks: dict[str, Callable[[], object]]):
        self._checks = checks

    def check(self) -> dict[str, str]:
        results = {}
        for name, probe in self._checks.items():
            try:
                probe()
                results[name] = "ok"
            except Exception as exc:  # any failure means not ready; say which and why
                results[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        return results
