"""/v1/integrity/*, /v1/events/{id}/proof: what auditors check the log with."""

from __future__ import annotations

from typing import ClassVar

import falcon.asgi

from auditlog.services.auth import Scope
from auditlog.services.integrity import IntegrityService
from auditlog.services.queries import no_parameters


class TreeHeadResource:
    """The latest signed tree head, or the one at ?size=N."""

    scopes: ClassVar[dict[str, Scope]] = {"GET": Scope.READ}

    def __init__(self, integrity: IntegrityService):
        self._integrity = integrity

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = await self._integrity.tree_head(req.params)


class InclusionProofResource:
    scopes: ClassVar[dict[str, Scope]] = {"GET": Scope.READ}

    def __init__(self, integrity: IntegrityService):
        self._integrity = integrity

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, event_id: str
    ) -> None:
        resp.media = await self._integrity.inclusion_proof(event_id, req.params)


class ConsistencyProofResource:
    scopes: ClassVar[dict[str, Scope]] = {"GET": Scope.READ}

    def __init__(self, integrity: IntegrityService):
        self._integrity = integrity

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = await self._integrity.consistency(req.params)


class PublicKeyResource:
    scopes: ClassVar[dict[str, Scope]] = {"GET": Scope.READ}

    def __init__(self, integrity: IntegrityService):
        self._integrity = integrity

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        no_parameters(req.params)
        resp.media = self._integrity.public_key()
