"""/v1/integrity/*, /v1/events/{id}/proof: what auditors check the log with."""

from __future__ import annotations

import falcon

from auditlog.services.integrity import IntegrityService


class TreeHeadResource:
    """The latest signed tree head, or the one at ?size=N."""

    def __init__(self, integrity: IntegrityService):
        self._integrity = integrity

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self._integrity.tree_head(req.params)


class InclusionProofResource:
    def __init__(self, integrity: IntegrityService):
        self._integrity = integrity

    def on_get(self, req: falcon.Request, resp: falcon.Response, event_id: str) -> None:
        resp.media = self._integrity.inclusion_proof(event_id, req.params)


class ConsistencyProofResource:
    def __init__(self, integrity: IntegrityService):
        self._integrity = integrity

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self._integrity.consistency(req.params)


class PublicKeyResource:
    def __init__(self, integrity: IntegrityService):
        self._integrity = integrity

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self._integrity.public_key()
