"""/v1/stats/buckets: event counts per time bucket."""

from __future__ import annotations

import falcon

from auditlog.services.queries import QueryService


class BucketsResource:
    def __init__(self, queries: QueryService):
        self._queries = queries

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self._queries.buckets(req.params)
