"""The fast canonical form equals RFC 8785's reference implementation, for any JSON."""

from __future__ import annotations

import hashlib
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from auditlog.integrity.leaf import (
    canonical_bytes,
    leaf_for_seq,
    leaf_hash,
    reference_canonical_bytes,
    seq_parts,
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_fast_path_equals_reference(document: dict[str, Any]):
    assert canonical_bytes(document) == reference_canonical_bytes(document)


class TestLeaf:
    def test_leaf_hash_rule(self):
        document = {
            "id": "x",
            "seq": 1,
            "data": {"b": 1.0, "a": [1e21, "é"]},
            "leaf_hash": "ignored",
        }
        expected = b'{"data":{"a":[1e+21,"\xc3\xa9"],"b":1},"id":"x","seq":1}'
        assert canonical_bytes(document) == expected
        assert leaf_hash(document) == hashlib.sha256(b"\x00" + expected).digest()

    def test_large_integers_read_back_from_jsonb_hash_as_the_double_they_were(self):
        # The API may return 1e18 (sent as a float) as the integer 10**18.
        assert canonical_bytes({"n": 10**18}) == canonical_bytes({"n": 1e18})

    def test_keys_beyond_the_bmp_sort_by_utf16(self):
        document = {"\U0001d11e": 1, "\ufb01": 2}  # UTF-16 order differs from code points
        assert canonical_bytes(document) == reference_canonical_bytes(document)
        assert canonical_bytes(document).index(b"\xf0") < canonical_bytes(document).index(b"\xef")


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["id", "type", "service", "data", "actor", "zeta", "a"]),
        json_values,
        max_size=7,
    ),
    st.integers(min_value=0, max_value=2**53 - 1),
)
def test_leaf_from_parts_equals_the_whole(document: dict[str, Any], seq: int):
    assert leaf_for_seq(*seq_parts(document), seq) == leaf_hash({**document, "seq": seq})
