"""auditlog-client is a distribution of its own that shares the `auditlog` namespace package
with the server: installed alone it brings auditlog.client and nothing of the server;
installed beside the server (as in .venv, or in one image) both import."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.helpers import ROOT

SITE_PACKAGES = sysconfig.get_paths()["purelib"]


def staged(project: Path, into: Path, name: str) -> Path:
    """A copy of a project's sources, so that building it leaves the checkout as it was."""
    copy = into / name
    copy.mkdir(parents=True)
    for file in ("pyproject.toml", "README.md"):
        shutil.copy(project / file, copy / file)
    shutil.copytree(
        project / "src", copy / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__")
    )
    return copy


def install(target: Path, *projects: Path) -> None:
    """A regular (not editable) install of the projects into a directory of its own,
    offline: their dependencies are in .venv already, and setuptools is (dev extra)."""
    sources = target.with_name(target.name + "-sources")
    projects = tuple(staged(project, sources, str(n)) for n, project in enumerate(projects))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            *map(str, projects),
        ],
        check=True,
        capture_output=True,
    )


def run_isolated(target: Path, code: str) -> str:
    """Python code with only `target` and .venv's site-packages on its path, the latter
    without its .pth files: the editable installs of both projects are invisible."""
    answer = subprocess.run(
        [sys.executable, "-S", "-c", code],
        env={"PYTHONPATH": f"{target}:{SITE_PACKAGES}"},
        cwd=target,
        capture_output=True,
        text=True,
        check=False,
    )
    assert answer.returncode == 0, answer.stderr
    return answer.stdout.strip()


class TestPackaging:
    def test_the_client_installs_and_works_alone(self, tmp_path: Path):
        tmp_path = tmp_path / "site"
        install(tmp_path, ROOT / "client")
        # Neither distribution ships auditlog/__init__.py: the namespace stays open.
        assert sorted(p.name for p in (tmp_path / "auditlog").iterdir()) == ["client"]
        assert (tmp_path / "auditlog" / "client" / "py.typed").exists()
        out = run_isolated(
            tmp_path,
            "import auditlog.client, importlib.util\n"
            "print(auditlog.client.__version__, auditlog.client.__file__)\n"
            "print(importlib.util.find_spec('auditlog.settings'))\n"
            "auditlog.client.Options()\n",
        )
        version, where, server = out.split()
        assert version == "0.1.0"
        assert where.startswith(str(tmp_path))
        assert server == "None"

    def test_the_client_installs_beside_the_server(self, tmp_path: Path):
        tmp_path = tmp_path / "site"
        install(tmp_path, ROOT, ROOT / "client")
        assert not (tmp_path / "auditlog" / "__init__.py").exists()
        out = run_isolated(
            tmp_path,
            "import auditlog.client, auditlog.settings\n"
            "print(auditlog.client.__file__)\nprint(auditlog.settings.__file__)\n",
        )
        assert all(line.startswith(str(tmp_path)) for line in out.splitlines()), out
