"""/healthz (the process answers) and /readyz (its backends answer too)."""

from __future__ import annotations

from typing import ClassVar

import falcon
import falcon.asgi

from auditlog.services.health import ReadinessService


class HealthResource:
    public: ClassVar[bool] = True  # answers without a key

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = {"status": "ok"}


class ReadinessResource:
    public: ClassVar[bool] = True  # answers without a key

    def __init__(self, readiness: ReadinessService):
        self._readiness = readiness

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        checks = await self._readiness.check()
        ready = all(value == "ok" for value in checks.values())
        resp.status = falcon.HTTP_200 if ready else falcon.HTTP_503
        resp.media = {"status": "ready" if ready else "not ready", "checks": checks}
