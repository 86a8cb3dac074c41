"""Render deploy/nginx/ for a topology: `make run` and the end-to-end tests use the same files.

docker-compose renders templates/auditlog.conf.template itself (the official image runs
envsubst on it); here the same ${NAME} placeholders are filled from the arguments and the
settings, and a placeholder without a value is an error rather than an empty string.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from auditlog.settings import Settings

MAIN_TEMPLATE = "nginx.conf.template"
SITE_TEMPLATE = "templates/auditlog.conf.template"
_PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


def default_deploy_dir() -> Path:
    checkout = Path(__file__).resolve().parents[2] / "deploy" / "nginx"
    return checkout if checkout.is_dir() else Path.cwd() / "deploy" / "nginx"


@dataclass(frozen=True)
class Topology:
    """Where nginx listens and what it forwards to (host:port each)."""

    listen: str
    api: Sequence[str]
    flower: str
    access_log: str = "/dev/stdout"
    # How long nginx waits between two reads of a request body before it answers 408: a
    # client that trickles or stops sending ties up nothing behind nginx for longer.
    body_timeout_s: int = 30


def placeholders(template: str) -> set[str]:
    """The ${NAME} placeholders a template needs."""
    return set(_PLACEHOLDER.findall(template))


def render(template: str, values: Mapping[str, str]) -> str:
    """Fill every ${NAME}; nginx's own $variables (no braces) are left as they are."""
    missing = placeholders(template) - set(values)
    if missing:
        raise ValueError(f"no value for {', '.join(sorted(missing))}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def site_values(settings: Settings, topology: Topology) -> dict[str, str]:
    if len(topology.api) != 2:
        raise ValueError(f"the template balances over 2 API instances, not {len(topology.api)}")
    return {
        "LISTEN": topology.listen,
        "API_1": topology.api[0],
        "API_2": topology.api[1],
        "FLOWER": topology.flower,
        "ACCESS_LOG": topology.access_log,
        "MAX_BODY_BYTES": str(settings.max_body_bytes),
        "CLIENT_BODY_TIMEOUT": f"{topology.body_timeout_s}s",
    }


def write_config(
    settings: Settings, topology: Topology, out: Path, deploy_dir: Path | None = None
) -> Path:
    """Render into out (nginx's prefix directory); return the main configuration file."""
    source = deploy_dir or default_deploy_dir()
    out.mkdir(parents=True, exist_ok=True)
    (out / "tmp").mkdir(exist_ok=True)
    site = render((source / SITE_TEMPLATE).read_text(), site_values(settings, topology))
    (out / "auditlog.conf").write_text(site)
    main = out / "nginx.conf"
    main.write_text(render((source / MAIN_TEMPLATE).read_text(), {}))
    return main
