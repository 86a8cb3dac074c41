"""/openapi.json: the API's one source of truth."""

from __future__ import annotations

from typing import Any, ClassVar

import falcon
import falcon.asgi
import orjson


class OpenApiResource:
    public: ClassVar[bool] = True  # answers without a key

    def __init__(self, document: dict[str, Any]):
        self._body = orjson.dumps(document)

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = self._body
