"""/viewer/: the auditors' viewer (static files; see auditlog.viewer). It answers without a
key: the page holds no data, and asks the API for it with the token the auditor gives it."""

from __future__ import annotations

from typing import ClassVar

import falcon
import falcon.asgi

from auditlog.controllers.conditional import matches
from auditlog.errors import NotFound
from auditlog.viewer import SECURITY_HEADERS, ViewerBundle


class ViewerResource:
    public: ClassVar[bool] = True  # answers without a key

    def __init__(self, bundle: ViewerBundle):
        self._bundle = bundle

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, asset: str = ""
    ) -> None:
        # The files are in memory (read at start-up): nothing here waits.
        found = self._bundle.get(asset)
        if found is None:
            if not self._bundle.built:
                raise NotFound("the viewer is not built: scripts/setup.sh builds it (npm)")
            raise NotFound(f"the viewer has no file {asset!r}")
        resp.set_headers(SECURITY_HEADERS)
        resp.set_header("Cache-Control", found.cache_control)
        resp.etag = found.etag
        if matches(req.if_none_match, found.etag):
            resp.status = falcon.HTTP_304
            return
        resp.content_type = found.media_type
        resp.data = found.body
