"""Keys as an auditor pastes them: every form the API and the commands show, or a file.

The log's public key appears as base64 of the raw 32 bytes (`GET /v1/integrity/public-key`,
`auditlog keygen`), as PEM (`var/signing-key.pem.pub`), and as a signed-note verifier key
(`<origin>+<key ID>+<base64>`). `read_key` takes any of them, or the path of a file holding
one (a private key's PEM gives its public key).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from auditlog.integrity.heads import public_bytes
from auditlog.integrity.note import NoteFormatError, VerifierKey

RAW_BYTES = 32


@dataclass(frozen=True)
class PublicKey:
    """A raw Ed25519 public key, and the verifier key it came as (with its name), if any."""

    raw: bytes
    vkey: VerifierKey | None = None


def read_key(spec: str) -> PublicKey:
    """A public key from its text (base64, PEM, vkey) or from a file holding one.

    ValueError says which forms were tried.
    """
    text = spec.strip()
    path = Path(text)
    if "\n" not in text and len(text) < 4096 and _is_file(path):
        return read_key_file(path)
    try:
        return parse_key(text.encode())
    except ValueError as exc:
        if "/" in text and not text.startswith("-----") and "+" not in text:
            raise ValueError(f"{text}: no such file, and not a key: {exc}") from None
        raise


def read_key_file(path: Path) -> PublicKey:
    """A public key from a file holding it in one of the forms `read_key` takes."""
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror}") from None
    try:
        return parse_key(content)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name too long for the file system is a key, not a path
        return False


def parse_key(data: bytes) -> PublicKey:
    """A public key from the bytes of one of the forms `read_key` takes."""
    if b"PRIVATE KEY" in data:
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"not a readable PEM private key ({exc})") from None
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError("the PEM private key is not an Ed25519 key")
        return PublicKey(public_bytes(private.public_key()))
    if b"PUBLIC KEY" in data:
        try:
            public = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise ValueError(f"not a readable PEM public key ({exc})") from None
        if not isinstance(public, Ed25519PublicKey):
            raise ValueError("the PEM public key is not an Ed25519 key")
        return PublicKey(public_bytes(public))
    text = data.decode(errors="replace").strip()
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raw = b""
    if len(raw) == RAW_BYTES:
        return PublicKey(raw)
    try:
        vkey = VerifierKey.parse(text)
    except NoteFormatError:
        raise ValueError(
            "not an Ed25519 public key as base64 (32 bytes), PEM, or a verifier key "
            "(name+keyid+base64)"
        ) from None
    return PublicKey(vkey.public_key, vkey)
