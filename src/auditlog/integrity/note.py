"""C2SP signed notes (c2sp.org/signed-note): text signed by one or more named keys.

    <text, ending in a newline>
    <blank line>
    — <key name> base64(4-byte key ID || signature)
    …

Two signature types are used here: Ed25519 over the text (type 0x01: the log signs its
checkpoints so) and timestamped Ed25519 cosignatures (type 0x04, c2sp.org/tlog-cosignature:
what witnesses add). A key is shown as a verifier key ("vkey"):
`<name>+<hex key ID>+base64(type || public key)`, the form Go's
golang.org/x/mod/sumdb/note reads.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from auditlog.integrity.heads import public_bytes

ED25519 = 0x01
COSIGNATURE_V1 = 0x04
SIGNATURE_TYPES = {ED25519: "Ed25519", COSIGNATURE_V1: "Ed25519 cosignature/v1"}
DASH = "\u2014"
MAX_SIGNATURES = 100  # the spec asks verifiers to accept at least 16
# No Unicode spaces (str.isspace covers them) and no plus sign in a key name.
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")


class NoteFormatError(ValueError):
    """The text is not a signed note, or a key or signature line is malformed."""


def valid_key_name(name: str) -> bool:
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


def key_id(name: str, signature_type: int, public_key: bytes) -> bytes:
    """SHA-256(name || 0x0A || type || public key)[:4], as the spec recommends."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([signature_type]) + public_key).digest()[:4]


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: who (name and key ID) and the signature bytes after the ID."""

    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        encoded = base64.b64encode(self.key_id + self.signature).decode()
        return f"{DASH} {self.name} {encoded}\n"

    @classmethod
    def parse(cls, line: str) -> NoteSignature:
        """One line, with or without its final newline."""
        body = line.removesuffix("\n")
        prefix = DASH + " "
        if not body.startswith(prefix):
            raise NoteFormatError(f"a signature line starts with '{DASH} ': {body[:40]!r}")
        name, sep, encoded = body[len(prefix) :].partition(" ")
        if not sep or not valid_key_name(name) or " " in encoded:
            raise NoteFormatError(f"malformed signature line: {body[:80]!r}")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise NoteFormatError(f"the signature of {name} is not base64") from None
        if len(raw) < 5:
            raise NoteFormatError(f"the signature of {name} is too short")
        return cls(name, raw[:4], raw[4:])


@dataclass(frozen=True)
class Note:
    """A note's text (final newline included) and its signatures, in order."""

    text: str
    signatures: tuple[NoteSignature, ...] = ()

    def render(self) -> str:
        return self.text + "\n" + "".join(s.line() for s in self.signatures)

    def with_signatures(self, *more: NoteSignature) -> Note:
        """The note with signatures added (a line already there is not repeated)."""
        lines = list(self.signatures)
        for signature in more:
            if signature not in lines:
                lines.append(signature)
        return Note(self.text, tuple(lines))

    @classmethod
    def parse(cls, data: bytes | str) -> Note:
        """Read a signed note; NoteFormatError says what is wrong."""
        if isinstance(data, bytes):
            try:
                data = data.decode()
            except UnicodeDecodeError:
                raise NoteFormatError("a note is UTF-8") from None
        if _CONTROL.search(data):
            raise NoteFormatError("a note holds no control characters other than newline")
        split = data.rfind("\n\n")
        if split < 0:
            raise NoteFormatError("no blank line separates the text from the signatures")
        text, block = data[: split + 1], data[split + 2 :]
        if not block.endswith("\n"):
            raise NoteFormatError("the last signature line does not end in a newline")
        lines = block[:-1].split("\n")
        if len(lines) > MAX_SIGNATURES:
            raise NoteFormatError(f"more than {MAX_SIGNATURES} signatures")
        return cls(text, tuple(NoteSignature.parse(line) for line in lines))


@dataclass(frozen=True)
class VerifierKey:
    """A named public key of one signature type: what verifies one kind of signature line."""

    name: str
    signature_type: int
    public_key: bytes

    def __post_init__(self) -> None:
        if not valid_key_name(self.name):
            raise NoteFormatError(f"{self.name!r} is not a key name (no spaces, no '+')")
        if self.signature_type not in SIGNATURE_TYPES:
            raise NoteFormatError(f"signature type {self.signature_type:#04x} is not supported")
        if len(self.public_key) != 32:
            raise NoteFormatError("an Ed25519 public key is 32 bytes")

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.signature_type, self.public_key)

    def text(self) -> str:
        """The vkey: name+hex(key ID)+base64(type || key)."""
        material = base64.b64encode(bytes([self.signature_type]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{material}"

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        name, _, rest = text.strip().partition("+")
        hex_id, _, material = rest.partition("+")
        try:
            raw = base64.b64decode(material, validate=True)
            given_id = bytes.fromhex(hex_id)
        except (binascii.Error, ValueError):
            raise NoteFormatError(f"not a verifier key: {text[:80]!r}") from None
        if len(given_id) != 4 or len(raw) < 2:
            raise NoteFormatError(f"not a verifier key: {text[:80]!r}")
        key = cls(name, raw[0], raw[1:])
        if key.key_id != given_id:
            raise NoteFormatError(f"the verifier key's ID {hex_id} does not match its key")
        return key

    def matches(self, signature: NoteSignature) -> bool:
        """The signature line claims to be by this key (name and key ID both match)."""
        return signature.name == self.name and signature.key_id == self.key_id

    def verify(self, text: str, signature: NoteSignature) -> bool:
        """True if the signature line is this key's, valid over the note text."""
        if not self.matches(signature):
            return False
        message = text.encode()
        raw = signature.signature
        if self.signature_type == COSIGNATURE_V1:
            if len(raw) != 8 + 64:
                return False
            message = cosigned_message(text, cosignature_timestamp(signature))
            raw = raw[8:]
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(raw, message)
        except (InvalidSignature, ValueError):
            return False
        return True


def cosigned_message(text: str, timestamp: int) -> bytes:
    """What a cosignature/v1 signs: two header lines, then the checkpoint's note text."""
    return f"cosignature/v1\ntime {timestamp}\n{text}".encode()


def cosignature_timestamp(signature: NoteSignature) -> int:
    """The POSIX time a cosignature/v1 says it was made (its first 8 bytes, big-endian)."""
    if len(signature.signature) < 8:
        raise NoteFormatError(f"the cosignature of {signature.name} has no timestamp")
    (timestamp,) = struct.unpack(">Q", signature.signature[:8])
    return int(timestamp)


class NoteSigner:
    """Signs note texts with an Ed25519 private key under a key name (type 0x01 or 0x04)."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey, signature_type: int = ED25519):
        self._key = private_key
        self.verifier = VerifierKey(name, signature_type, public_bytes(private_key.public_key()))

    @property
    def name(self) -> str:
        return self.verifier.name

    def sign(self, text: str, *, timestamp: int | None = None) -> NoteSignature:
        """The signature line for the text (a cosignature needs the time it is made)."""
        if self.verifier.signature_type == COSIGNATURE_V1:
            if timestamp is None or not 0 < timestamp < 2**63:
                raise ValueError("a cosignature needs a positive POSIX timestamp")
            signature = struct.pack(">Q", timestamp) + self._key.sign(
                cosigned_message(text, timestamp)
            )
        else:
            signature = self._key.sign(text.encode())
        return NoteSignature(self.name, self.verifier.key_id, signature)
