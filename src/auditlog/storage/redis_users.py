"""Redis's keys, and the ACL users that may touch them: what each process may do, said once.

Every key the service uses is under its prefix (AUDITLOG_REDIS_PREFIX); Celery's broker keeps
its own (kombu's queues, bindings and channels) under `<prefix>:broker:`. Each role logs in
as a user of its own (settings.REDIS_USERS) and may run only the commands its code runs, on
only its keys:

- api: append to the stream (the append script: XADD, with the rate-limit buckets, which
  the API also spends from and charges refused work to), its length and the dead letters'
  (for /metrics), read the tail cache, PING.
- writer: read, acknowledge, claim and dead-letter entries of its group; the slot leases;
  write the tail cache. It cannot append to the stream.
- broker: Celery's queues under `<prefix>:broker:`, nothing else.
- flower: read those queues, follow the task events, inspect the workers; it cannot queue a
  task, and sees nothing of the stream or the tail.
- default: nobody (no password, and not `nopass`): a client that does not log in may run
  nothing, not even PING (see DEFAULT_USER for why it still holds every right).

Redis checks every command a script runs against the user running it, so a user that may
run a script may run its commands directly too: the api user can XADD without the script's
backlog check (what makes a stream entry the API's own is a signature, not an ACL). Lua
scripts' keys are declared, and EVALSHA needs write access to them even where the script
only reads (the api user's tail reads): the commands inside are what is limited.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from redis.connection import parse_url

from auditlog.settings import REDIS_USERS, RedisRole, Settings, SettingsError
from auditlog.storage.stream import dead_key

Version = tuple[int, int]
# Commands some roles use that older servers do not know (an ACL rule naming an unknown
# command is an error, and a server with one in its ACL file does not start), and one only
# older servers need (AUDITLOG_ACK_FSYNC reads appendfsync where there is no WAITAOF).
_SINCE: dict[str, Version] = {"waitaof": (7, 2), "client|setinfo": (7, 2)}
_UNTIL: dict[str, Version] = {"config|get": (7, 2)}


@dataclass(frozen=True)
class RedisKeys:
    """Every key (or key prefix) the service uses in Redis."""

    stream: str  # the ingest stream (a Redis Stream, consumer group "writers")
    dead_letters: str  # entries that could never be written, with the reason
    ratelimit: str  # token buckets, one per API key: `<ratelimit>:<key name>`
    tail: str  # the tail cache: `<tail>:all`, `:cover`, `:trimmed`, `:svc:<service>`
    slots: str  # writer slot leases: `<slots>:<n>`
    tasks: str  # Celery's queue (a name; kombu keeps it under `broker`)
    broker: str  # kombu's global key prefix: every key and channel of Celery's broker
    # kombu's pub/sub channels (under `broker`) are named after the broker's database.
    broker_db: int

    @classmethod
    def of(cls, settings: Settings) -> RedisKeys:
        stream = settings.key("events")
        return cls(
            stream=stream,
            dead_letters=dead_key(stream),
            ratelimit=settings.key("ratelimit"),
            tail=settings.key("tail"),
            slots=settings.key("writer", "slot"),
            tasks=settings.key("tasks"),
            broker=settings.key("broker") + ":",
            # redis-py's own reading of the URL (untyped), as kombu's connection makes it.
            broker_db=int(parse_url(settings.redis_url_for("broker")).get("db", 0)),  # type: ignore[no-untyped-call]
        )

    def channel(self, name: str) -> str:
        """A fanout exchange's pub/sub channel, as kombu names it."""
        return f"{self.broker}/{self.broker_db}.{name}"


def _rules(keys: RedisKeys, role: RedisRole) -> list[str]:
    """The ACL rules of one role, after `reset` (no keys, channels or commands)."""
    events, dead, tail, slots = keys.stream, keys.dead_letters, keys.tail, keys.slots
    common = ["+ping", "+client|setinfo"]
    if role == "api":
        return [
            *common,
            # ack_fsync: INFO persistence, WAITAOF (7.2+), else CONFIG GET appendfsync.
            *("+info", "+waitaof", "+config|get"),
            # The scripts (append, rate-limit take and charge, tail reads) and what they
            # run; a script sent in a pipeline (the append with WAITAOF) is first looked for
            # with SCRIPT EXISTS.
            *("+evalsha", "+script|load", "+script|exists", "+time"),
            f"~{events}",
            f"~{keys.ratelimit}:*",
            f"~{tail}:*",
            f"(~{events} +xadd +xlen)",
            f"(%R~{dead} +xlen)",
            f"(~{keys.ratelimit}:* +hmget +hset +pexpire)",
            f"(%R~{tail}:* +zrevrange +zrevrangebyscore +zrangebyscore +hget)",
        ]
    if role == "writer":
        return [
            *common,
            *("+evalsha", "+script|load", "+multi", "+exec", "+discard"),
            f"~{slots}:*",
            f"~{tail}:*",
            f"(~{events} +xreadgroup +xack +xdel +xautoclaim +xpending +xgroup|create +xlen)",
            f"(~{dead} +xadd +xlen +xrange)",
            f"(~{slots}:* +get +set +pexpire +del)",
            f"(~{tail}:* +zadd +zrangebyscore +zrem +zremrangebyrank +zcard +zrange +hget +hset)",
        ]
    broker = keys.broker
    # PSUBSCRIBE is allowed a pattern only if it is one of the user's, letter for letter.
    control = f"&{keys.channel('celery.pidbox')}"
    events = f"&{keys.channel('celeryev')}/*"
    if role == "broker":
        return [
            *common,
            f"~{broker}*",
            f"&{broker}*",
            control,
            events,
            *("+@list", "+@set", "+@hash", "+@sortedset", "+@string", "+@pubsub"),
            *("+@transaction", "+evalsha", "+script|load", "+script|exists", "+time"),
            *("+del", "+exists", "+pexpire"),
            *("-@dangerous", "-@admin"),
        ]
    # flower: reads the queues' lengths, follows task events and inspects the workers: it
    # binds a queue of its own to the events exchange and one to the control replies, and
    # broadcasts on the control channel. It cannot push into a queue it does not own.
    own = [
        f"{broker}_kombu.binding_deadlines",
        f"{broker}celeryev.*",  # its event queues
        f"{broker}*.reply.celery.pidbox*",  # its reply queues
        # kombu's lock around putting back overdue unacknowledged messages, which every
        # channel takes as it closes; putting them back is the worker's (LPUSH is refused).
        f"{broker}unacked_mutex",
    ]
    for exchange in ("celeryev", "reply.celery.pidbox"):
        own += [
            f"{broker}_kombu.binding.{exchange}",
            f"{broker}_kombu.binding_permanent.{exchange}",
        ]
    return [
        *common,
        f"%R~{broker}*",
        f"&{broker}*",
        control,
        events,
        *("+llen", "+smembers", "+zrange", "+publish", "+time", "+@pubsub"),
        *("+script|load", "+script|exists", "+@transaction"),
        f"({' '.join(f'~{k}' for k in own)} +@list +@set +@sortedset +del +exists +pexpire"
        " +get +set +evalsha +time)",
    ]


def _supported(rule: str, version: Version) -> bool:
    words = rule.split()
    return all(version >= v for command, v in _SINCE.items() if f"+{command}" in words) and all(
        version < v for command, v in _UNTIL.items() if f"+{command}" in words
    )


def acl_rules(settings: Settings, role: RedisRole, version: Version) -> str:
    """One `user` line of an ACL file: the role's user, its password as a SHA-256 (the file
    holds no secret), and its rules for a Redis of this version."""
    password = settings.redis_password_for(role)
    if not password:
        raise SettingsError(f"AUDITLOG_REDIS_{role.upper()}_PASSWORD is empty")
    digest = hashlib.sha256(password.encode()).hexdigest()
    rules = [r for r in _rules(RedisKeys.of(settings), role) if _supported(r, version)]
    return " ".join(("user", REDIS_USERS[role], "reset", "on", f"#{digest}", *rules))


# The default user: no password and not `nopass`, so no client can ever be it (a connection
# without AUTH may run nothing). It keeps every right for one reader only: Redis itself,
# which replays its append-only file as the default user and checks the ACLs again at each
# EXEC of it (redis/redis#14541, valkey#3983). Every script with more than one write (the
# append of a request's events) reaches the file as a MULTI/EXEC, so with a default user
# of fewer rights a restart drops each such request without a word: events answered 202,
# gone (tests/integration/test_redis_acl.py and the fault suite's Redis restarts show it).
DEFAULT_USER = "user default reset on ~* &* +@all"


def acl_file(settings: Settings, version: Version) -> str:
    """An ACL file (redis-server --aclfile): every role's user, and a default user that no
    one can log in as (DEFAULT_USER)."""
    lines = [DEFAULT_USER, *(acl_rules(settings, role, version) for role in REDIS_USERS)]
    return "\n".join(lines) + "\n"


def parse_version(text: str) -> Version:
    """ "7.0.15" (or "v=7.0.15", as redis-server --version says it) -> (7, 0)."""
    number = text.strip().removeprefix("v=")
    try:
        major, minor = number.split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        raise ValueError(f"not a Redis version: {text!r}") from None
