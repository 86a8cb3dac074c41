"""An auditor holding only the public key checks the log through the API."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from falcon import testing
from sqlalchemy import Engine

from auditlog.integrity import b64decode, verify_consistency, verify_inclusion
from auditlog.integrity.heads import TreeHead
from auditlog.integrity.leaf import leaf_hash
from tests import factories
from tests.integration.conftest import PUBLIC_KEY, post, wait_stored


@pytest.fixture(scope="module")
def stored(api: testing.TestClient, owner_db: Engine) -> list[dict[str, Any]]:
    """Events in several batches, with data that JSONB likes to reformat."""
    sent = []
    for n in range(4):
        batch = factories.events(
            5,
            data={
                "amount": 19.99,
                "big": 1e20,
                "whole": 100.0,
                "small": 1.5e-7,
                "n": n,
                "unicode": "é 𝄞 \u2028",
                "\ufb01": "key beyond the BMP sort",
                "nested": [{}],
            },
        )
        post(api, batch)
        wait_stored(owner_db, [e["id"] for e in batch])
        sent += batch
    return [api.simulate_get(f"/v1/events/{e['id']}").json for e in sent]


def head(api: testing.TestClient, **params: Any) -> TreeHead:
    result = api.simulate_get("/v1/integrity/tree-head", params=params)
    assert result.status_code == 200, result.json
    assert set(result.json) == {"tree_size", "root_hash", "timestamp", "signature"}
    return TreeHead.from_dict(result.json)


class TestTreeHeads:
    def test_public_key_is_the_logs(self, api: testing.TestClient):
        body = api.simulate_get("/v1/integrity/public-key").json
        assert base64.b64decode(body["public_key"]) == PUBLIC_KEY
        assert body["algorithm"] == "Ed25519"

    def test_latest_head_is_signed(self, api: testing.TestClient, stored: list[dict[str, Any]]):
        latest = head(api)
        assert latest.verify(PUBLIC_KEY)
        assert latest.tree_size >= max(e["seq"] for e in stored) + 1
        forged = TreeHead(
            latest.tree_size + 1, latest.root_hash, latest.timestamp, latest.signature
        )
        assert not forged.verify(PUBLIC_KEY)

    def test_head_at_a_recorded_size(self, api: testing.TestClient, stored: list[dict[str, Any]]):
        size = stored[4]["seq"] + 1  # the end of the first batch
        assert head(api, size=size).tree_size == size

    @pytest.mark.parametrize(
        ("query", "status"),
        [
            ("size=0", 400),
            ("size=-1", 400),
            ("size=x", 400),
            ("size=1&size=2", 400),
            ("other=1", 400),
            ("size=999999999", 404),
        ],
    )
    def test_bad_sizes(self, api: testing.TestClient, query: str, status: int):
        result = api.simulate_get("/v1/integrity/tree-head", query_string=query)
        assert result.status_code == status
        assert result.json["description"]


class TestLeaves:
    def test_anyone_can_recompute_a_leaf_from_the_api_answer(self, stored: list[dict[str, Any]]):
        for event in stored:
            assert leaf_hash(event) == b64decode(event["leaf_hash"]), event["seq"]

    def test_listing_and_get_return_the_same_leaf(
        self, api: testing.TestClient, stored: list[dict[str, Any]]
    ):
        page = api.simulate_get("/v1/events", params={"service": "billing", "limit": 1000}).json
        by_id = {e["id"]: e for e in page["events"]}
        for event in stored:
            assert by_id[event["id"]] == event


class TestInclusion:
    def test_every_event_is_proven_in_the_latest_head(
        self, api: testing.TestClient, stored: list[dict[str, Any]]
    ):
        latest = head(api)  # reads are audited, so the log grows: pin the head
        for event in stored:
            proof = api.simulate_get(
                f"/v1/events/{event['id']}/proof", params={"tree_size": latest.tree_size}
            ).json
            assert proof["tree_size"] == latest.tree_size
            assert proof["leaf_index"] == event["seq"]
            assert proof["leaf_hash"] == event["leaf_hash"]
            assert verify_inclusion(
                proof["leaf_index"],
                proof["tree_size"],
                leaf_hash(event),
                [b64decode(p) for p in proof["inclusion_path"]],
                latest.root_hash,
            )

    def test_proof_against_an_older_head(
        self, api: testing.TestClient, stored: list[dict[str, Any]]
    ):
        event = stored[2]
        size = stored[4]["seq"] + 1
        old = head(api, size=size)
        proof = api.simulate_get(f"/v1/events/{event['id']}/proof", params={"tree_size": size}).json
        path = [b64decode(p) for p in proof["inclusion_path"]]
        assert verify_inclusion(event["seq"], size, leaf_hash(event), path, old.root_hash)
        assert not verify_inclusion(event["seq"], size, leaf_hash(stored[3]), path, old.root_hash)

    def test_event_newer_than_the_head_is_400(
        self, api: testing.TestClient, stored: list[dict[str, Any]]
    ):
        size = stored[4]["seq"] + 1
        result = api.simulate_get(
            f"/v1/events/{stored[-1]['id']}/proof", params={"tree_size": size}
        )
        assert result.status_code == 400
        assert "not in the tree" in result.json["description"]

    def test_unknown_event_is_404(self, api: testing.TestClient):
        assert api.simulate_get(f"/v1/events/{factories.event()['id']}/proof").status_code == 404


class TestConsistency:
    def test_the_log_only_grew_between_two_heads(
        self, api: testing.TestClient, stored: list[dict[str, Any]]
    ):
        first = head(api, size=stored[4]["seq"] + 1)
        second = head(api)
        proof = api.simulate_get(
            "/v1/integrity/consistency",
            params={"first": first.tree_size, "second": second.tree_size},
        ).json
        assert (proof["first"], proof["second"]) == (first.tree_size, second.tree_size)
        path = [b64decode(p) for p in proof["consistency_path"]]
        assert verify_consistency(
            first.tree_size, second.tree_size, path, first.root_hash, second.root_hash
        )
        assert not verify_consistency(
            first.tree_size, second.tree_size, path, second.root_hash, first.root_hash
        )

    @pytest.mark.parametrize(
        ("query", "status"),
        [
            ("first=1", 400),
            ("second=1", 400),
            ("first=3&second=2", 400),
            ("first=0&second=2", 400),
            ("first=1&second=999999999", 404),
        ],
    )
    def test_bad_parameters(
        self, api: testing.TestClient, stored: list[dict[str, Any]], query: str, status: int
    ):
        result = api.simulate_get("/v1/integrity/consistency", query_string=query)
        assert result.status_code == status
