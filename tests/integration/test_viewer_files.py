"""/viewer/ serves the built viewer, and only it: without a key, with a strict
Content-Security-Policy and the right caching, and no path reaches another file."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from falcon import testing

from auditlog.app import create_app
from auditlog.runtime import ApiRuntime
from auditlog.settings import Settings
from auditlog.viewer import CONTENT_SECURITY_POLICY, IMMUTABLE, REVALIDATE
from tests.helpers import ROOT

PINNED = base64.b64encode(b"k" * 32).decode()
SECRET_FILES = ["pyproject.toml", "README.md", "viewer/package.json", "src/auditlog/settings.py"]


@pytest.fixture(scope="module")
def viewer(settings: Settings, runtime: ApiRuntime) -> testing.TestClient:
    """The app with a key pinned for the viewer; requests carry no Authorization."""
    own = settings.model_copy(update={"viewer_public_key": PINNED})
    return testing.TestClient(create_app(own, runtime=runtime))


def assets_of(index: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/viewer/[^"]+)"', index)


class TestServing:
    """The page and its files answer without a key, with the headers a browser needs."""

    @pytest.mark.parametrize("path", ["/viewer/", "/viewer", "/viewer/index.html"])
    def test_the_page(self, viewer: testing.TestClient, path: str):
        answer = viewer.simulate_get(path)
        assert answer.status_code == 200, answer.text
        assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
        assert answer.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert "default-src 'self'" in CONTENT_SECURITY_POLICY
        assert "unsafe" not in CONTENT_SECURITY_POLICY
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Referrer-Policy"] == "no-referrer"
        assert answer.headers["Cache-Control"] == REVALIDATE
        assert answer.headers["ETag"].startswith('"')
        assert answer.text.startswith("<!doctype html>")

    def test_the_page_has_no_inline_script_or_style(self, viewer: testing.TestClient):
        page = viewer.simulate_get("/viewer/").text
        assert re.findall(r"<script\b[^>]*>", page) == [
            tag for tag in re.findall(r"<script\b[^>]*>", page) if " src=" in tag
        ]
        assert "<style" not in page
        assert " style=" not in page
        assert not re.search(r"\son[a-z]+=", page)  # no event-handler attributes

    def test_hashed_assets_are_immutable(self, viewer: testing.TestClient):
        assets = [a for a in assets_of(viewer.simulate_get("/viewer/").text) if "/assets/" in a]
        kinds = {path.rsplit(".", 1)[1] for path in assets}
        assert kinds == {"js", "css"}
        for path in assets:
            answer = viewer.simulate_get(path)
            assert answer.status_code == 200, path
            assert answer.headers["Cache-Control"] == IMMUTABLE
            assert answer.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
            media = {"js": "text/javascript", "css": "text/css"}[path.rsplit(".", 1)[1]]
            assert answer.headers["Content-Type"].startswith(media)
            assert re.search(r"-[A-Za-z0-9_-]{8,}\.(js|css)$", path), "no content hash in name"

    def test_if_none_match_is_answered_304(self, viewer: testing.TestClient):
        etag = viewer.simulate_get("/viewer/").headers["ETag"]
        for tag in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            again = viewer.simulate_get("/viewer/", headers={"If-None-Match": tag})
            assert again.status_code == 304, tag
            assert again.content == b""
        changed = viewer.simulate_get("/viewer/", headers={"If-None-Match": '"other"'})
        assert changed.status_code == 200

    def test_the_configuration_pins_the_settings_key(self, viewer: testing.TestClient):
        answer = viewer.simulate_get("/viewer/config.json")
        assert answer.status_code == 200
        assert answer.json == {"public_key": PINNED}
        assert answer.headers["Cache-Control"] == REVALIDATE

    def test_unpinned_by_default(self, anonymous: testing.TestClient):
        assert anonymous.simulate_get("/viewer/config.json").json == {"public_key": None}

    def test_only_get(self, viewer: testing.TestClient):
        assert viewer.simulate_post("/viewer/", body=b"x").status_code == 405
        assert viewer.simulate_delete("/viewer/index.html").status_code == 405


class TestNothingElse:
    """No spelling of a path reaches a file that is not the viewer's own."""

    @pytest.mark.parametrize(
        "path",
        [
            "/viewer/../pyproject.toml",
            "/viewer/%2e%2e/pyproject.toml",
            "/viewer/%2E%2E%2Fpyproject.toml",
            "/viewer/assets/../../pyproject.toml",
            "/viewer/assets/..%2f..%2fpyproject.toml",
            "/viewer/..%5c..%5cpyproject.toml",
            "/viewer//etc/passwd",
            "/viewer/%2fetc%2fpasswd",
            "/viewer/../../../../etc/passwd",
            "/viewer/....//....//pyproject.toml",
            "/viewer/index.html%00.js",
            "/viewer/.built-from",
            "/viewer/../viewer/package.json",
            "/viewer/../src/auditlog/settings.py",
            "/viewer/%C0%AE%C0%AE/pyproject.toml",  # an overlong '.', not UTF-8
            "/viewer/assets",
            "/viewer/nonexistent.js",
        ],
    )
    def test_traversal_is_a_plain_404(self, viewer: testing.TestClient, path: str):
        answer = viewer.simulate_get(path)
        assert answer.status_code in (400, 404), (path, answer.status_code)
        assert answer.headers["Content-Type"].startswith("application/json")
        secrets = [(ROOT / name).read_text() for name in SECRET_FILES]
        assert not any(secret[:200] in answer.text for secret in secrets)
        assert "root:" not in answer.text

    def test_not_built_says_so(self, settings: Settings, runtime: ApiRuntime, tmp_path: Any):
        own = settings.model_copy(update={"viewer_dir": tmp_path / "nothing"})
        answer = testing.TestClient(create_app(own, runtime=runtime)).simulate_get("/viewer/")
        assert answer.status_code == 404
        assert "not built" in answer.json["description"]
