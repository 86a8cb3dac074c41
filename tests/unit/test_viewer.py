"""The viewer's files: only what the build wrote, by exact name, with the right caching."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import orjson
import pytest

from auditlog.settings import Settings, SettingsError
from auditlog.viewer import CONFIG, IMMUTABLE, INDEX, REVALIDATE, Asset, ViewerBundle

KEY = base64.b64encode(bytes(range(32))).decode()


def found(bundle: ViewerBundle, name: str) -> Asset:
    asset = bundle.get(name)
    assert asset is not None, name
    return asset


@pytest.fixture
def built(tmp_path: Path) -> Path:
    """A directory laid out as `vite build` writes it, with a secret next to it."""
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / INDEX).write_text("<!doctype html><title>viewer</title>")
    (dist / "assets" / "index-3fa2b1c0.js").write_text("console.log(1)")
    (dist / "assets" / "style-9b8e7d6c.css").write_text("body{}")
    (dist / "favicon.svg").write_text("<svg/>")
    (dist / ".built-from").write_text("stamp")
    (dist / "notes.md").write_text("not a kind the build makes")
    (tmp_path / "secret.txt").write_text("outside the viewer")
    os.symlink(tmp_path / "secret.txt", dist / "assets" / "linked.js")
    return dist


class TestBundle:
    """ViewerBundle.load reads the built files once; get() answers by exact name only."""

    def test_serves_the_built_files_with_their_media_types(self, built: Path):
        bundle = ViewerBundle.load(built)
        assert bundle.built
        assert found(bundle, "").body == found(bundle, INDEX).body
        assert found(bundle, INDEX).media_type == "text/html; charset=utf-8"
        js = bundle.get("assets/index-3fa2b1c0.js")
        assert js is not None
        assert js.media_type == "text/javascript; charset=utf-8"
        assert found(bundle, "favicon.svg").media_type == "image/svg+xml"

    def test_hashed_assets_are_immutable_the_rest_revalidated(self, built: Path):
        bundle = ViewerBundle.load(built)
        assert found(bundle, "assets/style-9b8e7d6c.css").cache_control == IMMUTABLE
        assert found(bundle, INDEX).cache_control == REVALIDATE
        assert found(bundle, CONFIG).cache_control == REVALIDATE

    def test_etag_follows_the_content(self, built: Path):
        first = found(ViewerBundle.load(built), INDEX)
        (built / INDEX).write_text("<!doctype html><title>viewer 2</title>")
        second = found(ViewerBundle.load(built), INDEX)
        assert first.etag != second.etag
        assert '"' not in first.etag

    @pytest.mark.parametrize(
        "name",
        [
            "../secret.txt",
            "assets/../../secret.txt",
            "/etc/passwd",
            str(Path("/etc/passwd")),
            "assets/linked.js",  # a symlink out of the directory
            ".built-from",  # a dotfile (the build stamp)
            "notes.md",  # a kind of file the build does not make
            "assets",  # a directory
            "assets/",
            "INDEX.HTML",
            "index.html/",
            "./index.html",
            "assets//index-3fa2b1c0.js",
            "index.html\x00.js",
        ],
    )
    def test_nothing_else_is_reachable(self, built: Path, name: str):
        assert ViewerBundle.load(built).get(name) is None

    def test_the_configuration_pins_the_key_from_the_settings(self, built: Path):
        assert orjson.loads(found(ViewerBundle.load(built), CONFIG).body) == {"public_key": None}
        pinned = found(ViewerBundle.load(built, public_key=KEY), CONFIG)
        assert orjson.loads(pinned.body) == {"public_key": KEY}
        assert pinned.media_type == "application/json"

    def test_a_built_config_file_does_not_shadow_the_settings(self, built: Path):
        (built / CONFIG).write_text('{"public_key": "not from the settings"}')
        config = found(ViewerBundle.load(built, public_key=KEY), CONFIG)
        assert orjson.loads(config.body) == {"public_key": KEY}

    def test_without_a_build_only_the_configuration_exists(self, tmp_path: Path):
        bundle = ViewerBundle.load(tmp_path / "missing")
        assert not bundle.built
        assert bundle.get("") is None
        assert bundle.get(CONFIG) is not None


class TestSettings:
    """AUDITLOG_VIEWER_PUBLIC_KEY must be a raw Ed25519 key in base64, or empty."""

    def test_a_key_is_accepted(self):
        assert Settings.from_env({"AUDITLOG_VIEWER_PUBLIC_KEY": KEY}).viewer_public_key == KEY

    @pytest.mark.parametrize("value", ["not base64!", base64.b64encode(b"short").decode()])
    def test_anything_else_is_refused_by_name(self, value: str):
        with pytest.raises(SettingsError, match="AUDITLOG_VIEWER_PUBLIC_KEY"):
            Settings.from_env({"AUDITLOG_VIEWER_PUBLIC_KEY": value})

    def test_the_default_directory_is_the_checkouts_build(self):
        assert Settings.from_env({}).viewer_dir.parts[-2:] == ("viewer", "dist")
