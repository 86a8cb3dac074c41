"""The ACL file: one user per role, hashes instead of passwords, rules for the server's
version (an ACL file naming a command the server lacks stops it from starting)."""

from __future__ import annotations

import hashlib

import pytest

from auditlog.settings import REDIS_USERS, Settings, SettingsError
from auditlog.storage.redis_users import DEFAULT_USER, RedisKeys, acl_file, parse_version

PASSWORDS = {f"AUDITLOG_REDIS_{role.upper()}_PASSWORD": f"pw-{role}" for role in REDIS_USERS}


def settings(**env: str) -> Settings:
    return Settings.from_env({**PASSWORDS, "AUDITLOG_REDIS_PREFIX": "p", **env})


class TestAclFile:
    def test_every_role_has_a_user_with_its_password_hashed(self):
        text = acl_file(settings(), (7, 0))
        users = {line.split()[1]: line for line in text.splitlines()}
        assert set(users) == {"default", *REDIS_USERS.values()}
        for role, name in REDIS_USERS.items():
            digest = hashlib.sha256(f"pw-{role}".encode()).hexdigest()
            assert f" #{digest} " in users[name]
            assert f"pw-{role}" not in text
        # Nobody can be the default user: no password, and not nopass (see DEFAULT_USER).
        assert users["default"] == DEFAULT_USER
        assert "nopass" not in DEFAULT_USER.split()
        assert not any(w.startswith((">", "#")) for w in DEFAULT_USER.split())

    def test_commands_of_newer_servers_only_for_them(self):
        old, new = acl_file(settings(), (7, 0)), acl_file(settings(), (7, 4))
        for command in ("+waitaof", "+client|setinfo"):
            assert command not in old.split()
            assert command in new.split()
        # Only where there is no WAITAOF does AUDITLOG_ACK_FSYNC read the fsync policy.
        assert "+config|get" in old.split()
        assert "+config|get" not in new.split()

    def test_keys_and_channels_follow_the_prefix_and_the_brokers_database(self):
        keys = RedisKeys.of(settings(AUDITLOG_BROKER_URL="redis://h:1/3"))
        assert (keys.stream, keys.dead_letters, keys.broker) == (
            "p:events",
            "p:events:dead",
            "p:broker:",
        )
        assert keys.channel("celery.pidbox") == "p:broker:/3.celery.pidbox"
        text = acl_file(settings(AUDITLOG_BROKER_URL="redis://h:1/3"), (7, 0))
        assert "&p:broker:/3.celery.pidbox" in text
        assert "~p:events " in text

    def test_a_role_without_a_password_is_refused_by_name(self):
        with pytest.raises(SettingsError, match="AUDITLOG_REDIS_FLOWER_PASSWORD"):
            acl_file(settings(AUDITLOG_REDIS_FLOWER_PASSWORD=""), (7, 0))

    @pytest.mark.parametrize(("text", "version"), [("7.0.15", (7, 0)), ("v=7.4.1", (7, 4))])
    def test_versions(self, text: str, version: tuple[int, int]):
        assert parse_version(text) == version

    def test_not_a_version(self):
        with pytest.raises(ValueError, match="not a Redis version"):
            parse_version("seven")
