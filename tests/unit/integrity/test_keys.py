"""The log's key as an auditor pastes it: base64, PEM, verifier key, or a file of any."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from auditlog.integrity.checkpoint import log_verifier
from auditlog.integrity.heads import generate_key
from auditlog.integrity.keys import read_key


@pytest.fixture
def key(tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "signing-key.pem"
    return path, generate_key(path)


class TestForms:
    def test_every_form(self, key: tuple[Path, bytes]):
        path, raw = key
        vkey = log_verifier(raw, "host/auditlog").text()
        pem = path.with_suffix(".pem.pub").read_text()
        for spec in (base64.b64encode(raw).decode(), pem, vkey, str(path), f"{path}.pub"):
            assert read_key(spec).raw == raw
        assert read_key(vkey).vkey == log_verifier(raw, "host/auditlog")

    def test_a_file_of_base64_and_of_a_vkey(self, key: tuple[Path, bytes], tmp_path: Path):
        _, raw = key
        (tmp_path / "b64").write_text(base64.b64encode(raw).decode() + "\n")
        (tmp_path / "vkey").write_text(log_verifier(raw, "h/a").text() + "\n")
        assert read_key(str(tmp_path / "b64")).raw == raw
        assert read_key(str(tmp_path / "vkey")).vkey is not None

    @pytest.mark.parametrize("spec", ["5YgI", "/no/such/file.pem", "", "a+b+c"])
    def test_refused_with_a_reason(self, spec: str):
        with pytest.raises(ValueError, match="not"):
            read_key(spec)
