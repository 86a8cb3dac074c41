"""/v1/log/*: the log as C2SP tlog-tiles (checkpoint, hash tiles, entry bundles).

The checkpoint and the hash tiles carry no event content: with AUDITLOG_PUBLIC_TILES the
app routes them to the Public* resources, which answer without a key. Entry bundles hold
the events themselves and always need a read key.
"""

from __future__ import annotations

from typing import ClassVar

import falcon.asgi

from auditlog.controllers.middleware import is_public
from auditlog.services.auth import Scope
from auditlog.services.queries import no_parameters
from auditlog.services.tiles import (
    CHECKPOINT_MAX_AGE_S,
    FULL_MAX_AGE_S,
    PARTIAL_MAX_AGE_S,
    TileAnswer,
    TileService,
)

CHECKPOINT_TYPE = "text/plain; charset=utf-8"
TILE_TYPE = "application/octet-stream"


def _cache(resp: falcon.asgi.Response, *, public: bool, max_age_s: int, immutable: bool) -> None:
    # Answers read with a key stay out of shared caches.
    directives = ["public" if public else "private", f"max-age={max_age_s}"]
    resp.cache_control = [*directives, "immutable"] if immutable else directives


def _tile(resp: falcon.asgi.Response, answer: TileAnswer, *, public: bool) -> None:
    resp.content_type = TILE_TYPE
    resp.data = answer.body
    max_age = FULL_MAX_AGE_S if answer.full else PARTIAL_MAX_AGE_S
    _cache(resp, public=public, max_age_s=max_age, immutable=answer.full)


class CheckpointResource:
    """The latest checkpoint (a signed note) with the witnesses' cosignatures."""

    scopes: ClassVar[dict[str, Scope]] = {"GET": Scope.READ}

    def __init__(self, tiles: TileService):
        self._tiles = tiles

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        no_parameters(req.params)
        text = await self._tiles.checkpoint()
        # Set only once there is a checkpoint: a refusal is JSON (app.py's handler).
        resp.content_type = CHECKPOINT_TYPE
        resp.text = text
        _cache(resp, public=is_public(self), max_age_s=CHECKPOINT_MAX_AGE_S, immutable=False)


class PublicCheckpointResource(CheckpointResource):
    public: ClassVar[bool] = True  # AUDITLOG_PUBLIC_TILES


class HashTileResource:
    """tile/<L>/<N>[.p/<W>]: 256 (or W) hashes of one tree level."""

    scopes: ClassVar[dict[str, Scope]] = {"GET": Scope.READ}

    def __init__(self, tiles: TileService):
        self._tiles = tiles

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, level: str, index: str
    ) -> None:
        no_parameters(req.params)
        _tile(resp, await self._tiles.hash_tile(level, index), public=is_public(self))


class PublicHashTileResource(HashTileResource):
    public: ClassVar[bool] = True  # AUDITLOG_PUBLIC_TILES


class EntryBundleResource:
    """tile/entries/<N>[.p/<W>]: the leaf inputs (events) of 256 (or W) leaves."""

    scopes: ClassVar[dict[str, Scope]] = {"GET": Scope.READ}

    def __init__(self, tiles: TileService):
        self._tiles = tiles

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, index: str
    ) -> None:
        no_parameters(req.params)
        _tile(resp, await self._tiles.entry_bundle(index), public=False)
