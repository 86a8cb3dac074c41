"""docker-compose.yml and the Dockerfile, checked without Docker: every file, port and
variable they name exists and agrees with the settings and with the nginx template."""

from __future__ import annotations

import re
import shlex
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pytest
import yaml

from auditlog.nginx import KNOBS, SITE_TEMPLATE, default_deploy_dir, placeholders
from auditlog.settings import FOREIGN, PREFIX, Settings
from tests.helpers import ROOT

_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?][^}]*)?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]  # type: ignore[no-any-return]


def interpolate(value: str) -> str:
    """What compose substitutes for ${VAR}, ${VAR:-default}, ${VAR:?error}: a stand-in value."""
    return _INTERPOLATION.sub(lambda m: f"x-{m.group(1).lower()}", value)


def environment(service: dict[str, Any]) -> dict[str, str]:
    return {k: interpolate(str(v)) for k, v in (service.get("environment") or {}).items()}


def command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command", [])
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


def option(cmd: list[str], name: str) -> str:
    """The value of --name=value or -n value in a command line."""
    for index, word in enumerate(cmd):
        if word.startswith(f"{name}="):
            return word.split("=", 1)[1]
        if word == name:
            return cmd[index + 1]
    raise AssertionError(f"{name} not in {cmd}")


def healthcheck_ports(service: dict[str, Any]) -> set[int]:
    test = " ".join(service["healthcheck"]["test"])
    return {int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", test)}


def app_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if s.get("build")}


def apis(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if command(s)[:1] == ["gunicorn"]}


class TestFiles:
    """Every file the compose file and the Dockerfile name is in the repository."""

    def test_build_context_and_mounts_exist(self, services: dict[str, dict[str, Any]]):
        for name, service in services.items():
            if "build" in service:
                assert (ROOT / service["build"] / "Dockerfile").is_file(), name
            for volume in service.get("volumes", []):
                source = volume.split(":")[0]
                if source.startswith((".", "/")):
                    assert (ROOT / source).exists(), (name, source)

    def test_files_in_commands_exist(self, services: dict[str, dict[str, Any]]):
        for name, service in services.items():
            for word in command(service):
                for path in re.findall(r"(deploy/[\w./-]+)", word):
                    assert (ROOT / path).is_file(), (name, path)

    def test_dockerfile_copies_what_exists(self):
        text = (ROOT / "Dockerfile").read_text()
        stages = set(re.findall(r"^FROM \S+ AS (\S+)$", text, re.MULTILINE))
        for line in text.splitlines():
            if line.startswith("COPY --from="):  # from a build stage of this Dockerfile
                assert line.split()[1].removeprefix("--from=") in stages, line
            elif line.startswith("COPY "):
                for source in line.split()[1:-1]:
                    assert (ROOT / source).exists(), source

    def test_dockerfile_installs_the_serve_extra(self):
        text = (ROOT / "Dockerfile").read_text()
        assert "'.[serve]'" in text
        assert "FROM python:3.11" in text


class TestImagesAndTopology:
    def test_official_images(self, services: dict[str, dict[str, Any]]):
        assert services["postgres"]["image"].startswith("timescale/timescaledb:")
        assert services["redis"]["image"].startswith("redis:")
        assert services["nginx"]["image"].startswith("nginx:")

    def test_redis_keeps_an_append_only_file(self, services: dict[str, dict[str, Any]]):
        cmd = command(services["redis"])
        assert option(cmd, "--appendonly") == "yes"

    def test_two_api_replicas_a_worker_flower_and_a_one_shot_migration(
        self, services: dict[str, dict[str, Any]]
    ):
        assert len(apis(services)) == 2
        assert command(services["worker"])[:4] == [
            "celery",
            "-A",
            "auditlog.tasks.worker",
            "worker",
        ]
        assert command(services["flower"])[3] == "flower"
        script = " ".join(command(services["migrate"]))
        assert "auditlog migrate --setup" in script
        assert "auditlog keygen --if-missing" in script
        assert services["migrate"]["restart"] == "no"

    def test_only_the_worker_and_migration_see_the_signing_key(
        self, services: dict[str, dict[str, Any]]
    ):
        def mounts(service: dict[str, Any]) -> set[str]:
            return {v.split(":")[0] for v in service.get("volumes", [])}

        holders = {name for name, s in services.items() if "signing-key" in mounts(s)}
        assert holders == {"migrate", "worker"}
        for api in apis(services):
            assert "public-key" in mounts(services[api])
            env = services[api]["environment"]
            assert env["AUDITLOG_PUBLIC_KEY_PATH"].startswith("/public-key/")

    def test_depends_on_conditions_can_be_met(self, services: dict[str, dict[str, Any]]):
        for name, service in services.items():
            for target, rule in (service.get("depends_on") or {}).items():
                assert target in services, (name, target)
                condition = rule["condition"]
                if condition == "service_healthy":
                    assert "healthcheck" in services[target], (name, target)
                elif condition == "service_completed_successfully":
                    assert services[target].get("restart") == "no", (name, target)
                else:
                    assert condition == "service_started", (name, condition)
        for name in (*app_services(services), "nginx"):
            if services[name].get("restart") != "no":  # one-shot jobs need none
                assert "healthcheck" in services[name], name


class TestSettingsAgree:
    """Every AUDITLOG_* variable is a setting with a valid value; hosts are services."""

    def test_each_app_service_environment_is_valid_settings(
        self, services: dict[str, dict[str, Any]]
    ):
        for name, service in app_services(services).items():
            env = environment(service)
            assert all(k.startswith(PREFIX) or k in FOREIGN.values() for k in env), name
            Settings.from_env(env)  # raises on an unknown variable or a bad value

    def test_urls_point_at_services(self, services: dict[str, dict[str, Any]]):
        for name, service in app_services(services).items():
            settings = Settings.from_env(environment(service))
            for url in (settings.database_url, settings.redis_url, settings.celery_broker_url):
                host = urlsplit(url).hostname
                assert host in services, (name, url)

    def test_flower_has_its_password_and_worker_its_metrics_port(
        self, services: dict[str, dict[str, Any]]
    ):
        flower = Settings.from_env(environment(services["flower"]))
        assert flower.flower_password
        assert not flower.flower_control
        worker = Settings.from_env(environment(services["worker"]))
        assert worker.worker_metrics_port
        assert worker.metrics_dir is not None
        assert worker.worker_metrics_address == "0.0.0.0"  # noqa: S104 - inside its container
        assert healthcheck_ports(services["worker"]) == {worker.worker_metrics_port}
        assert str(worker.worker_metrics_port) in services["worker"]["expose"]


class TestPortsAgree:
    def test_nginx_template_gets_every_placeholder(self, services: dict[str, dict[str, Any]]):
        template = (default_deploy_dir() / SITE_TEMPLATE).read_text()
        assert placeholders(template) <= set(environment(services["nginx"]))
        mount = services["nginx"]["volumes"][0].split(":")
        assert (ROOT / mount[0]).resolve() == (default_deploy_dir() / "templates").resolve()
        assert mount[1] == "/etc/nginx/templates"

    def test_nginx_knobs_have_their_defaults(self, services: dict[str, dict[str, Any]]):
        """Compose spells out every knob of the site template, with make run's defaults."""
        nginx = environment(services["nginx"])
        site = {name: knob for name, knob in KNOBS.items() if not knob.main_only}
        assert {name: nginx[name] for name in site} == {n: k.default for n, k in site.items()}

    def test_nginx_upstreams_are_the_api_binds(self, services: dict[str, dict[str, Any]]):
        nginx = environment(services["nginx"])
        upstreams = {nginx["API_1"], nginx["API_2"]}
        binds = set()
        for name, service in apis(services).items():
            port = option(command(service), "-b").rsplit(":", 1)[1]
            binds.add(f"{name}:{port}")
            assert str(port) in service["expose"], name
            assert healthcheck_ports(service) == {int(port)}, name
        assert upstreams == binds

    def test_nginx_listens_where_it_is_published(self, services: dict[str, dict[str, Any]]):
        nginx = services["nginx"]
        listen = environment(nginx)["LISTEN"]
        assert nginx["ports"] == [f"127.0.0.1:8080:{listen}"]
        assert healthcheck_ports(nginx) == {int(listen)}

    def test_flower_port(self, services: dict[str, dict[str, Any]]):
        flower = services["flower"]
        port = option(command(flower), "--port")
        assert environment(services["nginx"])["FLOWER"] == f"flower:{port}"
        assert flower["ports"] == [f"127.0.0.1:5555:{port}"]
        assert healthcheck_ports(flower) == {int(port)}

    def test_body_limit_is_the_apps(self, services: dict[str, dict[str, Any]]):
        limits = {Settings.from_env(environment(s)).max_body_bytes for s in apis(services).values()}
        assert limits == {int(environment(services["nginx"])["MAX_BODY_BYTES"])}


class TestLeastPrivilege:
    """Each program gets the passwords of its own roles, and Redis loads the users that the
    one-shot redis-acl service writes, for the version of the image it runs."""

    WANTED: ClassVar[dict[str, set[str]]] = {
        "api-1": {"READER", "REDIS_API"},
        "api-2": {"READER", "REDIS_API"},
        "worker": {"WRITER", "REDIS_WRITER", "REDIS_BROKER"},
        "flower": {"REDIS_FLOWER", "FLOWER"},
        "migrate": {"OWNER", "WRITER", "READER"},
        "redis-acl": {"REDIS_API", "REDIS_WRITER", "REDIS_BROKER", "REDIS_FLOWER"},
    }

    def test_each_program_has_only_its_own_passwords(self, services: dict[str, dict[str, Any]]):
        held = {
            name: {
                key.removeprefix(PREFIX).removesuffix("_PASSWORD")
                for key in environment(service)
                if key.endswith("_PASSWORD")
            }
            for name, service in app_services(services).items()
        }
        assert held == self.WANTED

    def test_redis_loads_the_users_redis_acl_writes_for_its_version(
        self, services: dict[str, dict[str, Any]]
    ):
        job, redis_service = services["redis-acl"], services["redis"]
        out = option(command(job), "--out")
        assert job["restart"] == "no"
        assert redis_service["depends_on"]["redis-acl"]["condition"] == (
            "service_completed_successfully"
        )
        volume, written_dir = job["volumes"][0].split(":")
        mounted = next(v for v in redis_service["volumes"] if v.startswith(f"{volume}:"))
        read_dir = mounted.split(":")[1]
        acl = option(command(redis_service), "--aclfile")
        assert acl == out.replace(written_dir, read_dir, 1)
        image_version = redis_service["image"].split(":")[1]
        assert option(command(job), "--redis-version") == image_version
        # Without a password PING answers NOAUTH: Redis is up (and closed to strangers).
        assert redis_service["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]

    def test_flower_logs_in_as_its_own_user(self, services: dict[str, dict[str, Any]]):
        assert command(services["flower"])[:3] == ["celery", "-A", "auditlog.tasks.flower"]
