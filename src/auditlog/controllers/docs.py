"""/openapi.json: the API's one source of truth."""

from __future__ import annotations

from typing import Any, ClassVar

import falcon


class OpenApiResource:
    public: ClassVar[bool] = True  # answers without a key

    def __init__(self, document: dict[str, Any]):
        self._document = document

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self._document
