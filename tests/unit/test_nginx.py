"""deploy/nginx/ renders for a topology; every placeholder is filled, nginx's own variables
are left alone, and every knob has a default that an operator can change."""

from __future__ import annotations

import re

import pytest

from auditlog.nginx import (
    KNOBS,
    MAIN_TEMPLATE,
    SITE_TEMPLATE,
    Topology,
    default_deploy_dir,
    placeholders,
    render,
    write_config,
)
from auditlog.openapi import build_openapi
from auditlog.settings import Settings

TOPOLOGY = Topology(
    listen="127.0.0.1:18080", api=["127.0.0.1:18081", "127.0.0.1:18082"], flower="127.0.0.1:1"
)
ROUTED = {"LISTEN", "API_1", "API_2", "FLOWER", "ACCESS_LOG", "MAX_BODY_BYTES"}


class TestRender:
    def test_templates_need_exactly_what_is_given(self):
        site = (default_deploy_dir() / SITE_TEMPLATE).read_text()
        main = (default_deploy_dir() / MAIN_TEMPLATE).read_text()
        site_knobs = {name for name, knob in KNOBS.items() if not knob.main_only}
        main_knobs = {name for name, knob in KNOBS.items() if knob.main_only}
        assert placeholders(site) == ROUTED | site_knobs
        assert placeholders(main) == main_knobs | {"WORKER_RLIMIT_NOFILE"}

    def test_values_and_nginx_variables(self, tmp_path):
        settings = Settings.from_env({"AUDITLOG_MAX_BODY_BYTES": "123456"})
        main = write_config(settings, TOPOLOGY, tmp_path)
        site = (tmp_path / "auditlog.conf").read_text()
        assert "include auditlog.conf;" in main.read_text()
        assert "client_max_body_size 123456;" in site
        assert "the body is over the limit of 123456 bytes" in site
        assert "client_body_timeout 30s;" in site
        assert "server 127.0.0.1:18081 max_fails=1" in site
        assert "listen 127.0.0.1:18080;" in site
        assert "$http_x_request_id" in site
        assert "${" not in site
        assert "${" not in main.read_text()

    def test_a_missing_value_is_an_error(self):
        with pytest.raises(ValueError, match="API_2"):
            render("server ${API_1}; server ${API_2};", {"API_1": "a:1"})


class TestKnobs:
    def test_defaults(self, tmp_path):
        main = write_config(Settings.from_env({}), TOPOLOGY, tmp_path).read_text()
        site = (tmp_path / "auditlog.conf").read_text()
        assert "worker_processes auto;" in main
        assert "worker_connections 4096;" in main
        # Two files per connection (client and instance), and some for temporary files.
        assert "worker_rlimit_nofile 8256;" in main
        assert "limit_conn auditlog_conn_per_address 64;" in site
        assert "rate=1000r/s;" in site
        assert "burst=2000 nodelay;" in site
        assert "client_header_timeout 10s;" in site

    def test_an_operator_changes_one(self, tmp_path):
        topology = Topology(
            listen="127.0.0.1:1",
            api=["a:1", "b:2"],
            flower="f:3",
            knobs={"RATE_PER_ADDRESS": "20r/s", "WORKER_CONNECTIONS": "100"},
        )
        main = write_config(Settings.from_env({}), topology, tmp_path).read_text()
        site = (tmp_path / "auditlog.conf").read_text()
        assert "rate=20r/s;" in site
        assert "worker_connections 100;" in main
        assert "worker_rlimit_nofile 264;" in main
        assert "burst=2000 nodelay;" in site  # the others keep their defaults

    def test_an_unknown_knob_is_an_error(self, tmp_path):
        topology = Topology(listen="x:1", api=["a:1", "b:2"], flower="f:3", knobs={"RATE": "1"})
        with pytest.raises(ValueError, match="no such nginx knob: RATE"):
            write_config(Settings.from_env({}), topology, tmp_path)

    def test_every_knob_is_in_the_readme(self):
        readme = (default_deploy_dir().parents[1] / "README.md").read_text()
        for name, knob in KNOBS.items():
            row = re.search(rf"^\| `{name}` \| `([^`]*)` \|", readme, re.MULTILINE)
            assert row is not None, name
            assert row.group(1) == knob.default, name


class TestErrors:
    def test_every_error_nginx_answers_has_a_title_and_a_description(self):
        site = (default_deploy_dir() / SITE_TEMPLATE).read_text()
        pages = re.findall(r"^\s*error_page ([\d\s=]+?) /\.auditlog/error;", site, re.MULTILINE)
        statuses = {int(s) for page in pages for s in page.split() if not s.startswith("=")}
        statuses = (statuses - {494}) | {431}
        for name in ("auditlog_error_title", "auditlog_error_text"):
            block = re.search(rf"map \$status \${name} \{{(.*?)\n\}}", site, re.DOTALL)
            assert block is not None, name
            mapped = {int(s) for s in re.findall(r"^\s*(\d{3}) ", block.group(1), re.MULTILINE)}
            assert statuses <= mapped, (name, statuses - mapped)

    def test_the_allow_of_nginx_405_is_the_route_table(self):
        """nginx refuses TRACE itself; its Allow is what the app's route allows."""
        site = (default_deploy_dir() / SITE_TEMPLATE).read_text()
        block = re.search(r"map \$request_uri \$auditlog_route_allow \{(.*?)\n\}", site, re.DOTALL)
        assert block is not None
        listed = dict(re.findall(r'^\s*"~(.+?)" "(.+?)";', block.group(1), re.MULTILINE))
        document = build_openapi(Settings.from_env({}))
        expected = {}
        for path, operations in document["paths"].items():
            pattern = re.sub(r"\{[^}]+\}", "[^/?]+", path.replace(".", "\\."))
            methods = [method.upper() for method in sorted(operations)] + ["OPTIONS"]
            expected[f"^{pattern}(\\?|$)"] = ", ".join(methods)
        assert listed == expected
