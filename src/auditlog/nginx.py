"""Render deploy/nginx/ for a topology: `make run` and the end-to-end tests use the same files.

docker-compose renders templates/auditlog.conf.template itself (the official image runs
envsubst on it); here the same ${NAME} placeholders are filled from the arguments, the
settings and the knobs, and a placeholder without a value is an error rather than an empty
string.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from auditlog.settings import Settings

MAIN_TEMPLATE = "nginx.conf.template"
SITE_TEMPLATE = "templates/auditlog.conf.template"
_PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


@dataclass(frozen=True)
class Knob:
    """A value of the nginx configuration an operator may need to change."""

    default: str
    meaning: str
    # Only in the main configuration, which compose does not use (the image has its own).
    main_only: bool = False


# Named as their placeholders: compose sets the same names in the nginx service's
# environment, `auditlog nginx-config --set NAME=VALUE` (make run: NGINX_OPTIONS) the rest.
KNOBS: dict[str, Knob] = {
    "WORKER_PROCESSES": Knob("auto", "nginx worker processes (auto: one per core)", True),
    "WORKER_CONNECTIONS": Knob(
        "4096", "connections each worker holds (a proxied request takes two)", True
    ),
    "CONNECTIONS_PER_ADDRESS": Knob(
        "64",
        "requests in progress from one client address (a body being read, an answer being "
        "sent: a follow stream holds one); more get 429",
    ),
    "RATE_PER_ADDRESS": Knob("1000r/s", "requests per second from one client address"),
    "BURST_PER_ADDRESS": Knob(
        "2000", "requests one address may send beyond that rate at once before 429"
    ),
    "CLIENT_HEADER_TIMEOUT": Knob(
        "10s", "the whole request line and headers must arrive within this (else 408)"
    ),
    "CLIENT_BODY_TIMEOUT": Knob(
        "30s", "longest pause between two reads of a body (else 408); restarts on every read"
    ),
}


def default_deploy_dir() -> Path:
    checkout = Path(__file__).resolve().parents[2] / "deploy" / "nginx"
    return checkout if checkout.is_dir() else Path.cwd() / "deploy" / "nginx"


@dataclass(frozen=True)
class Topology:
    """Where nginx listens and what it forwards to (host:port each), and knobs changed from
    their defaults (KNOBS)."""

    listen: str
    api: Sequence[str]
    flower: str
    access_log: str = "/dev/stdout"
    knobs: Mapping[str, str] = field(default_factory=dict)

    def knob_values(self) -> dict[str, str]:
        unknown = set(self.knobs) - set(KNOBS)
        if unknown:
            raise ValueError(f"no such nginx knob: {', '.join(sorted(unknown))}")
        return {name: self.knobs.get(name, knob.default) for name, knob in KNOBS.items()}


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
    knobs = topology.knob_values()
    return {
        "LISTEN": topology.listen,
        "API_1": topology.api[0],
        "API_2": topology.api[1],
        "FLOWER": topology.flower,
        "ACCESS_LOG": topology.access_log,
        "MAX_BODY_BYTES": str(settings.max_body_bytes),
        **{name: value for name, value in knobs.items() if not KNOBS[name].main_only},
    }


def main_values(topology: Topology) -> dict[str, str]:
    knobs = topology.knob_values()
    connections = int(knobs["WORKER_CONNECTIONS"])
    return {
        **{name: value for name, value in knobs.items() if KNOBS[name].main_only},
        # Each connection is a file, plus the temporary files of buffered bodies and answers.
        "WORKER_RLIMIT_NOFILE": str(2 * connections + 64),
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
    main.write_text(render((source / MAIN_TEMPLATE).read_text(), main_values(topology)))
    return main
