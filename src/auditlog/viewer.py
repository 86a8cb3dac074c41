"""The auditors' viewer as the API serves it: the files `vite build` wrote into the
viewer's directory (scripts/setup.sh builds viewer/ into viewer/dist), read once at start-up
and held in memory, plus the viewer's configuration (`config.json`) made from the settings.

Only the files found there at start-up are ever served, by their exact relative name: no
path from a request is joined to a directory, so no `..`, symlink or encoded trick reaches
another file. Hashed names under `assets/` never change content and are cached for a year;
`index.html` and the rest are revalidated on every load (ETag, 304).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson
import structlog

log = structlog.get_logger("auditlog.viewer")

INDEX = "index.html"
CONFIG = "config.json"
HASHED_DIR = "assets/"  # vite's output for names carrying a content hash

# The page's policy: its own origin only, no inline script or style, no plugins, no
# framing, and every HTML sink refused (Trusted Types): data from the log can only ever be
# text. frame-ancestors 'none': embedding the viewer in another site's page would need an
# allowlist of those sites (a setting), not a looser default.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "base-uri 'none'",
        "object-src 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    ]
)
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"

# What the build produces; a file of another kind is not served.
MEDIA_TYPES: Mapping[str, str] = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".woff2": "font/woff2",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str  # the opaque tag (unquoted): a hash of the body
    cache_control: str


def _asset(body: bytes, media_type: str, *, immutable: bool) -> Asset:
    digest = hashlib.sha256(body).hexdigest()[:32]
    return Asset(body, media_type, digest, IMMUTABLE if immutable else REVALIDATE)


class ViewerBundle:
    """The viewer's files by relative name (`index.html`, `assets/index-3fa2.js`, …)."""

    def __init__(self, assets: Mapping[str, Asset]):
        self._assets = dict(assets)

    @classmethod
    def load(cls, directory: Path, *, public_key: str | None = None) -> ViewerBundle:
        """Read the built viewer in `directory`; `public_key` is pinned in its configuration."""
        assets: dict[str, Asset] = {}
        if directory.is_dir():
            for path in sorted(directory.rglob("*")):
                name = path.relative_to(directory).as_posix()
                media_type = MEDIA_TYPES.get(path.suffix)
                # Only regular files the build wrote: no links, no dotfiles (build stamps).
                if path.is_symlink() or not path.is_file() or media_type is None:
                    continue
                if any(part.startswith(".") for part in name.split("/")) or name == CONFIG:
                    continue
                assets[name] = _asset(
                    path.read_bytes(), media_type, immutable=name.startswith(HASHED_DIR)
                )
        if INDEX not in assets:
            log.warning("the viewer is not built; /viewer/ answers 404", directory=str(directory))
        config = {"public_key": public_key or None}
        assets[CONFIG] = _asset(orjson.dumps(config), MEDIA_TYPES[".json"], immutable=False)
        return cls(assets)

    @property
    def built(self) -> bool:
        return INDEX in self._assets

    def get(self, name: str) -> Asset | None:
        """The file of that exact relative name ("" is the index), or None."""
        return self._assets.get(name or INDEX)
