"""Transparency log trust policies (c2sp.org/tlog-policy): which logs, which witnesses, and
how many cosignatures make a checkpoint trusted.

    log <vkey> [<url>]
    witness <name> <vkey> [<url>]
    group <name> all|any|<k> <member>...
    quorum <name>|none

The service reads one (AUDITLOG_WITNESS_POLICY) for the witnesses it submits checkpoints to
(their URLs); `auditlog verify --policy` reads one to decide what it trusts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from auditlog.integrity.note import COSIGNATURE_V1, ED25519, NoteFormatError, VerifierKey

NONE = "none"
MAX_ENTRIES = 64


class PolicyError(ValueError):
    """The policy file breaks a rule; the message names the line."""


@dataclass(frozen=True)
class PolicyLog:
    key: VerifierKey
    url: str | None = None


@dataclass(frozen=True)
class PolicyWitness:
    name: str
    key: VerifierKey
    url: str | None = None


@dataclass(frozen=True)
class Group:
    name: str
    threshold: int
    members: tuple[str, ...]


@dataclass
class Policy:
    logs: list[PolicyLog] = field(default_factory=list)
    witnesses: dict[str, PolicyWitness] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    quorum: str = NONE

    def satisfied(self, cosigned: set[str]) -> bool:
        """Whether cosignatures by these witnesses (policy names) meet the quorum."""
        return self._witnessed(self.quorum, cosigned)

    def _witnessed(self, name: str, cosigned: set[str]) -> bool:
        if name == NONE:
            return True
        group = self.groups.get(name)
        if group is None:
            return name in cosigned
        return sum(self._witnessed(m, cosigned) for m in group.members) >= group.threshold

    def describe_quorum(self) -> str:
        if self.quorum == NONE:
            return "none"
        group = self.groups.get(self.quorum)
        if group is None:
            return f"witness {self.quorum}"
        return f"{group.threshold} of {', '.join(group.members)}"

    @classmethod
    def from_witnesses(cls, keys: Sequence[VerifierKey], quorum: int | None) -> Policy:
        """`--witness KEY … --quorum N`: N of the given witnesses (all of them by default)."""
        policy = cls()
        for key in keys:
            policy._add_witness(PolicyWitness(key.name, _witness_key(key, key.name)), key.name)
        if not keys:
            if quorum:
                raise PolicyError(f"a quorum of {quorum} needs that many --witness keys")
            return policy
        threshold = len(keys) if quorum is None else quorum
        if not 1 <= threshold <= len(keys):
            raise PolicyError(f"the quorum must be between 1 and {len(keys)} (the witnesses given)")
        policy.groups["witnesses"] = Group("witnesses", threshold, tuple(policy.witnesses))
        policy.quorum = "witnesses"
        return policy

    @classmethod
    def read(cls, path: Path) -> Policy:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise PolicyError(f"{path}: {exc.strerror}") from None
        return cls.parse(data.decode("utf-8", "replace"), source=str(path))

    @classmethod
    def parse(cls, text: str, *, source: str = "policy") -> Policy:
        policy = cls()
        quorum: str | None = None
        for number, raw in enumerate(text.split("\n"), start=1):
            where = f"{source}:{number}"
            try:
                found = policy._line(raw, quorum)
            except (NoteFormatError, PolicyError) as exc:
                raise PolicyError(f"{where}: {exc}") from None
            if found is not None:
                quorum = found
            if len(policy.witnesses) + len(policy.groups) + len(policy.logs) > MAX_ENTRIES:
                raise PolicyError(f"{where}: more than {MAX_ENTRIES} logs, witnesses and groups")
        if quorum is None:
            raise PolicyError(f"{source}: no quorum line (`quorum none` asks for no witness)")
        policy.quorum = quorum
        return policy

    def _line(self, raw: str, quorum: str | None) -> str | None:
        """Take one line into the policy; return the quorum's name if it is the quorum."""
        if any(ord(c) < 0x20 and c != "\t" for c in raw) or "\x7f" in raw:
            raise PolicyError("control characters are not allowed")
        words = raw.replace("\t", " ").split()
        if not words or words[0].startswith("#"):
            return None
        keyword, args = words[0], words[1:]
        if keyword == "log" and 1 <= len(args) <= 2:
            key = VerifierKey.parse(args[0])
            if key.signature_type != ED25519:
                raise PolicyError("a log key is an Ed25519 key (type 0x01)")
            if any(log.key.public_key == key.public_key for log in self.logs):
                raise PolicyError("this log key is listed twice")
            self.logs.append(PolicyLog(key, args[1] if len(args) == 2 else None))
        elif keyword == "witness" and 2 <= len(args) <= 3:
            name = args[0]
            key = _witness_key(VerifierKey.parse(args[1]), name)
            self._add_witness(PolicyWitness(name, key, args[2] if len(args) == 3 else None), name)
        elif keyword == "group" and len(args) >= 3:
            self._add_group(args[0], args[1], args[2:])
        elif keyword == "quorum" and len(args) == 1:
            if quorum is not None:
                raise PolicyError("a policy has exactly one quorum line")
            if args[0] != NONE and not self._defined(args[0]):
                raise PolicyError(f"{args[0]} is not defined on an earlier line")
            return args[0]
        else:
            raise PolicyError(f"not a policy line: {raw.strip()[:80]!r}")
        return None

    def _defined(self, name: str) -> bool:
        return name in self.witnesses or name in self.groups

    def _add_witness(self, witness: PolicyWitness, name: str) -> None:
        if name == NONE or self._defined(name):
            raise PolicyError(f"the name {name} is taken")
        if any(w.key.public_key == witness.key.public_key for w in self.witnesses.values()):
            raise PolicyError(f"the key of witness {name} is listed twice")
        self.witnesses[name] = witness

    def _add_group(self, name: str, threshold: str, members: list[str]) -> None:
        if name == NONE or self._defined(name):
            raise PolicyError(f"the name {name} is taken")
        for member in members:
            if member == NONE or not self._defined(member):
                raise PolicyError(f"group {name}: {member} is not defined on an earlier line")
        if len(set(members)) != len(members):
            raise PolicyError(f"group {name} lists a member twice")
        if threshold == "all":
            k = len(members)
        elif threshold == "any":
            k = 1
        elif threshold.isdigit() and 1 <= int(threshold) <= len(members):
            k = int(threshold)
        else:
            raise PolicyError(f"group {name}: the threshold is all, any or 1 to {len(members)}")
        self.groups[name] = Group(name, k, tuple(members))


def _witness_key(key: VerifierKey, name: str) -> VerifierKey:
    if key.signature_type != COSIGNATURE_V1:
        raise PolicyError(
            f"witness {name}: a witness key is a cosignature/v1 key (type 0x04), "
            f"not type {key.signature_type:#04x}"
        )
    return key
