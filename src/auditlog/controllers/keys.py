"""/v1/keys: the API keys, for admins (no secrets; keys are created with the CLI)."""

from __future__ import annotations

from typing import ClassVar

import falcon.asgi

from auditlog.canonical import format_timestamp
from auditlog.services.auth import KeyDirectory, Scope
from auditlog.services.queries import no_parameters


class KeysResource:
    scopes: ClassVar[dict[str, Scope]] = {"GET": Scope.ADMIN}

    def __init__(self, keys: KeyDirectory):
        self._keys = keys

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        no_parameters(req.params)
        keys = await self._keys.list()
        req.context.results = len(keys)
        resp.media = {
            "keys": [
                {
                    "name": key.name,
                    "scope": key.scope,
                    "services": list(key.services),
                    "rate_per_s": key.rate_per_s,
                    "burst": key.burst,
                    "created_at": format_timestamp(key.created_at) if key.created_at else None,
                    "revoked_at": format_timestamp(key.revoked_at) if key.revoked_at else None,
                }
                for key in keys
            ]
        }
