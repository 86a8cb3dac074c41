"""deploy/nginx/ renders for a topology; every placeholder is filled, nginx's own variables
are left alone."""

from __future__ import annotations

import pytest

from auditlog.nginx import (
    MAIN_TEMPLATE,
    SITE_TEMPLATE,
    Topology,
    default_deploy_dir,
    placeholders,
    render,
    write_config,
)
from auditlog.settings import Settings

TOPOLOGY = Topology(
    listen="127.0.0.1:18080", api=["127.0.0.1:18081", "127.0.0.1:18082"], flower="127.0.0.1:1"
)


class TestRender:
    def test_site_template_needs_exactly_what_is_given(self):
        template = (default_deploy_dir() / SITE_TEMPLATE).read_text()
        assert placeholders(template) == {
            "LISTEN",
            "API_1",
            "API_2",
            "FLOWER",
            "ACCESS_LOG",
            "MAX_BODY_BYTES",
            "CLIENT_BODY_TIMEOUT",
        }
        assert placeholders((default_deploy_dir() / MAIN_TEMPLATE).read_text()) == set()

    def test_values_and_nginx_variables(self, tmp_path):
        settings = Settings.from_env({"AUDITLOG_MAX_BODY_BYTES": "123456"})
        main = write_config(settings, TOPOLOGY, tmp_path)
        site = (tmp_path / "auditlog.conf").read_text()
        assert "include auditlog.conf;" in main.read_text()
        assert "client_max_body_size 123456;" in site
        assert "client_body_timeout 30s;" in site
        assert "server 127.0.0.1:18081 max_fails=1" in site
        assert "listen 127.0.0.1:18080;" in site
        assert "$http_x_request_id" in site
        assert "${" not in site

    def test_a_missing_value_is_an_error(self):
        with pytest.raises(ValueError, match="API_2"):
            render("server ${API_1}; server ${API_2};", {"API_1": "a:1"})
