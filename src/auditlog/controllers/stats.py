"""/v1/stats/buckets: event counts per time bucket."""

from __future__ import annotations

from typing import ClassVar

import falcon.asgi

from auditlog.services.auth import Scope
from auditlog.services.queries import QueryService


class BucketsResource:
    scopes: ClassVar[dict[str, Scope]] = {"GET": Scope.READ}

    def __init__(self, queries: QueryService):
        self._queries = queries

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = await self._queries.buckets(req.params)
        req.context.results = len(body["buckets"])
        resp.media = body
