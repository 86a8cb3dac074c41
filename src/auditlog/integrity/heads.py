"""Signed tree heads: {tree_size, root_hash, timestamp} signed with Ed25519.

The signature covers the RFC 8785 serialization of exactly those three keys, with the root
hash in standard base64 and the timestamp in the canonical RFC 3339 form. The API returns
the head with a fourth key, `signature` (standard base64 of the 64-byte signature).
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from auditlog.canonical import format_timestamp, parse_timestamp


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@dataclass(frozen=True)
class TreeHead:
    tree_size: int
    root_hash: bytes
    timestamp: datetime
    signature: bytes = b""

    def signed_body(self) -> bytes:
        """The bytes the signature covers."""
        return rfc8785.dumps(
            {
                "tree_size": self.tree_size,
                "root_hash": b64(self.root_hash),
                "timestamp": format_timestamp(self.timestamp),
            }
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "tree_size": self.tree_size,
            "root_hash": b64(self.root_hash),
            "timestamp": format_timestamp(self.timestamp),
            "signature": b64(self.signature),
        }

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> TreeHead:
        """Read a head as the API returns it; ValueError if it is not one."""
        try:
            return cls(
                tree_size=int(value["tree_size"]),
                root_hash=base64.b64decode(value["root_hash"], validate=True),
                timestamp=parse_timestamp(value["timestamp"]),
                signature=base64.b64decode(value["signature"], validate=True),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a tree head: {exc}") from None

    def verify(self, public_key: bytes) -> bool:
        """True if the signature is by the holder of the raw Ed25519 `public_key`."""
        try:
            Ed25519PublicKey.from_public_bytes(public_key).verify(
                self.signature, self.signed_body()
            )
        except (InvalidSignature, ValueError):
            return False
        return True


class HeadSigner:
    """Signs tree heads with the log's private key (held by the writers only). The same key
    signs the C2SP checkpoints witnesses cosign (integrity/checkpoint.py)."""

    def __init__(self, private_key: Ed25519PrivateKey):
        self._key = private_key
        self.public_key = public_bytes(private_key.public_key())

    @classmethod
    def from_file(cls, path: Path) -> HeadSigner:
        return cls(load_private_key(path))

    def sign(self, tree_size: int, root_hash: bytes, timestamp: datetime) -> TreeHead:
        unsigned = TreeHead(tree_size, root_hash, timestamp)
        return TreeHead(tree_size, root_hash, timestamp, self._key.sign(unsigned.signed_body()))


def public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in a PEM (PKCS#8) file; ValueError with the reason if not."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise ValueError(f"no signing key at {path}; create one with `auditlog keygen`") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return key


def generate_key(path: Path) -> bytes:
    """Write a new private key to `path` (mode 0600) and its public key to `path`.pub."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    path.with_suffix(path.suffix + ".pub").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return public_bytes(key.public_key())
