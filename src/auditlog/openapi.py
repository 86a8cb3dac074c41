"""The OpenAPI 3.1 document: the one description of the API, served at /openapi.json.

Request schemas come from the pydantic models that validate events, so the document and the
validation cannot drift; tests/integration/test_openapi.py keeps the rest true.
"""

from __future__ import annotations

from typing import Any

import msgspec

from auditlog.canonical import EVENT_FIELDS
from auditlog.services.envelope import (
    ACTION_PATTERN,
    OUTCOMES,
    SERVICE_PATTERN,
    TYPE_PATTERN,
    EventIn,
)
from auditlog.services.export import FORMATS as EXPORT_FORMATS
from auditlog.services.queries import DEFAULT_LIMIT, DEFAULT_TOP, MAX_LIMIT, MAX_TOP
from auditlog.services.tail import DEFAULT_TAIL_LIMIT as TAIL_DEFAULT_LIMIT
from auditlog.settings import Settings
from auditlog.storage.events import GROUP_KEYS

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


_NULLABLE_STRING = {"type": ["string", "null"]}
_TIMESTAMP = {"type": "string", "format": "date-time"}
_UUID = {"type": "string", "format": "uuid"}
_BASE64 = {"type": "string", "contentEncoding": "base64"}


def _schemas(settings: Settings) -> dict[str, Any]:
    _, defs = msgspec.json.schema_components([EventIn], ref_template="#/components/schemas/{name}")
    party_out = {
        "type": ["object", "null"],
        "required": ["id"],
        "properties": {"id": {"type": "string"}, "type": _NULLABLE_STRING},
        "additionalProperties": True,
    }
    return {
        **defs,
        "CloudEvent": {
            "type": "object",
            "description": (
                "A CloudEvents 1.0 event in structured mode. `source` is the service, `time` "
                "is occurred_at, `subject` is subject.id; the extension attributes `actorid`, "
                "`actortype`, `subjecttype`, `action` and `outcome` fill those fields, and any "
                "other extension attribute is kept in `context`. A non-UUID `id` becomes a "
                "UUIDv5 of source and id (the original is kept as context.cloudevents_id)."
            ),
            "required": ["specversion", "id", "source", "type", "time"],
            "properties": {
                "specversion": {"const": "1.0"},
                "id": {"type": "string", "minLength": 1},
                "source": {"type": "string", "pattern": SERVICE_PATTERN},
                "type": {"type": "string", "pattern": TYPE_PATTERN, "maxLength": 128},
                "time": _TIMESTAMP,
                "subject": {"type": "string"},
                "subjecttype": {"type": "string"},
                "actorid": {"type": "string"},
                "actortype": {"type": "string"},
                "action": {"type": "string", "pattern": ACTION_PATTERN},
                "outcome": {"enum": list(OUTCOMES)},
                "datacontenttype": {"type": "string"},
                "data": {"type": "object"},
            },
            "additionalProperties": True,
        },
        "StoredEvent": {
            "type": "object",
            "description": "An event as stored: the envelope plus what the server added.",
            "required": list(EVENT_FIELDS),
            "properties": {
                "id": _UUID,
                "seq": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Position in the log: global, gapless, commit order.",
                },
                "type": {"type": "string"},
                "service": {"type": "string"},
                "occurred_at": _TIMESTAMP,
                "received_at": {**_TIMESTAMP, "description": "When the server accepted it."},
                "publisher": _NULLABLE_STRING,
                "actor": party_out,
                "subject": party_out,
                "action": _NULLABLE_STRING,
                "outcome": {"enum": list(OUTCOMES)},
                "context": {"type": ["object", "null"]},
                "data": {"type": "object"},
                "leaf_hash": {
                    **_BASE64,
                    "description": "SHA-256(0x00 || RFC 8785 of this object without "
                    "leaf_hash): the event's leaf in the integrity tree (docs/INTEGRITY.md).",
                },
            },
            "additionalProperties": False,
        },
        "TreeHead": {
            "type": "object",
            "description": "A signed tree head: the signature is Ed25519 over the RFC 8785 "
            "serialization of {tree_size, root_hash, timestamp}.",
            "required": ["tree_size", "root_hash", "timestamp", "signature"],
            "properties": {
                "tree_size": {"type": "integer", "minimum": 1},
                "root_hash": _BASE64,
                "timestamp": _TIMESTAMP,
                "signature": _BASE64,
            },
            "additionalProperties": False,
        },
        "InclusionProof": {
            "type": "object",
            "required": ["leaf_index", "tree_size", "leaf_hash", "inclusion_path"],
            "properties": {
                "leaf_index": {"type": "integer", "minimum": 0},
                "tree_size": {"type": "integer", "minimum": 1},
                "leaf_hash": _BASE64,
                "inclusion_path": {"type": "array", "items": _BASE64},
            },
            "additionalProperties": False,
        },
        "ConsistencyProof": {
            "type": "object",
            "required": ["first", "second", "consistency_path"],
            "properties": {
                "first": {"type": "integer", "minimum": 1},
                "second": {"type": "integer", "minimum": 1},
                "consistency_path": {"type": "array", "items": _BASE64},
            },
            "additionalProperties": False,
        },
        "PublicKey": {
            "type": "object",
            "required": ["public_key", "algorithm", "origin", "verifier_key"],
            "properties": {
                "public_key": _BASE64,
                "algorithm": {"const": "Ed25519"},
                "origin": {
                    "type": "string",
                    "description": "The log's origin: the first line of its checkpoints and "
                    "its key's name in their signature line.",
                },
                "verifier_key": {
                    "type": "string",
                    "description": "The key as a C2SP signed-note verifier key "
                    "(origin+keyid+base64), as Go's golang.org/x/mod/sumdb/note reads it.",
                },
            },
            "additionalProperties": False,
        },
        "Accepted": {
            "type": "object",
            "required": ["accepted", "ids"],
            "properties": {
                "accepted": {"type": "integer", "minimum": 1},
                "ids": {
                    "type": "array",
                    "items": _UUID,
                    "description": "The stored ids, in input order.",
                },
            },
            "additionalProperties": False,
        },
        "EventPage": {
            "type": "object",
            "required": ["events", "next_cursor"],
            "properties": {
                "events": {"type": "array", "items": _ref("StoredEvent")},
                "next_cursor": _NULLABLE_STRING,
            },
            "additionalProperties": False,
        },
        "Tail": {
            "type": "object",
            "required": ["events"],
            "properties": {
                "events": {
                    "type": "array",
                    "items": _ref("StoredEvent"),
                    "description": "Newest first (descending seq).",
                },
            },
            "additionalProperties": False,
        },
        "TailMessage": {
            "type": "object",
            "description": "One Server-Sent Events message of a follow stream (OpenAPI 3.1 "
            "describes each message of a text/event-stream). Messages carry one event each; "
            "comments (`: …`) and bare `id:` lines keep the connection open and move the "
            "client's Last-Event-ID without a message.",
            "required": ["data"],
            "properties": {
                "id": {
                    "type": "string",
                    "pattern": "^[0-9]+$",
                    "description": "The event's seq: send it back as Last-Event-ID.",
                },
                "event": {"const": "message"},
                "data": {
                    "type": "string",
                    "contentMediaType": JSON,
                    "contentSchema": _ref("StoredEvent"),
                    "description": "The event, as getEvent returns it.",
                },
                "retry": {"type": "integer", "minimum": 0},
            },
        },
        "Buckets": {
            "type": "object",
            "description": (
                "Every bucket of the range, zero-filled. Grouped: one row per bucket for each "
                "of the `groups` (the `top` with the most events in the range, most first), "
                "then, when `others` groups were left out, one row per bucket with "
                "`other: true` summing them."
            ),
            "required": ["width", "group_by", "buckets"],
            "properties": {
                "width": {"type": "string"},
                "group_by": _NULLABLE_STRING,
                "top": {"type": "integer", "minimum": 1, "maximum": MAX_TOP},
                "groups": {"type": "array", "items": _NULLABLE_STRING},
                "others": {"type": "integer", "minimum": 0},
                "buckets": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["start", "count"],
                        "properties": {
                            "start": _TIMESTAMP,
                            "count": {"type": "integer", "minimum": 0},
                            "key": _NULLABLE_STRING,
                            "other": {"const": True},
                        },
                        "additionalProperties": False,
                    },
                },
            },
            "additionalProperties": False,
        },
        "Error": {
            "type": "object",
            "required": ["title"],
            "properties": {"title": {"type": "string"}, "description": {"type": "string"}},
        },
        "AmbiguousId": {
            "type": "object",
            "required": ["title", "description", "services"],
            "properties": {
                "title": {"type": "string"},
                "description": {"type": "string"},
                "services": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "The services whose events have the id, oldest first.",
                },
            },
        },
        "IngestUnavailable": {
            "type": "object",
            "required": ["title", "description"],
            "properties": {
                "title": {"type": "string"},
                "description": {"type": "string"},
                "ids": {
                    "type": "array",
                    "items": _UUID,
                    "description": "Only with AUDITLOG_ACK_FSYNC, when Redis did not confirm "
                    "the events on disk in time: they are queued, with these ids. Send them "
                    "again with these ids; each is stored once.",
                },
            },
        },
        "ValidationErrors": {
            "type": "object",
            "required": ["title", "description", "errors"],
            "properties": {
                "title": {"type": "string"},
                "description": {"type": "string"},
                "errors": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["index", "field", "message"],
                        "properties": {
                            "index": {"type": "integer", "minimum": 0},
                            "field": {"type": "string"},
                            "message": {"type": "string"},
                        },
                        "additionalProperties": False,
                    },
                },
            },
        },
        "KeyList": {
            "type": "object",
            "required": ["keys"],
            "properties": {
                "keys": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": [
                            "name",
                            "scope",
                            "services",
                            "rate_per_s",
                            "burst",
                            "created_at",
                            "revoked_at",
                        ],
                        "properties": {
                            "name": {"type": "string"},
                            "scope": {"enum": ["write", "read", "admin"]},
                            "services": {"type": "array", "items": {"type": "string"}},
                            "rate_per_s": {"type": ["number", "null"]},
                            "burst": {"type": ["integer", "null"]},
                            "created_at": {"type": ["string", "null"], "format": "date-time"},
                            "revoked_at": {"type": ["string", "null"], "format": "date-time"},
                        },
                        "additionalProperties": False,
                    },
                }
            },
            "additionalProperties": False,
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"type": "string"}},
        },
        "Readiness": {
            "type": "object",
            "required": ["status", "checks"],
            "properties": {
                "status": {"enum": ["ready", "not ready"]},
                "checks": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
    }


BAD_QUERY = "A query parameter is unknown, repeated, empty or malformed, or is not UTF-8."


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string", "minLength": 1},
    }


FILTERS = [
    _query("service", "Exact producing service."),
    _query("type", "Exact type, or a prefix ending in `*`, e.g. `customer.*`."),
    _query("actor_type", "actor.type equals."),
    _query("actor_id", "actor.id equals."),
    _query("subject_type", "subject.type equals."),
    _query("subject_id", "subject.id equals."),
    _query("action", "action equals."),
    _query("outcome", "outcome equals.", {"enum": list(OUTCOMES)}),
    _query("trace_id", "context.trace_id equals."),
    _query("publisher", "The name of the API key that sent the event."),
    _query("since", "occurred_at ≥ since (RFC 3339).", _TIMESTAMP),
    _query("until", "occurred_at < until (RFC 3339).", _TIMESTAMP),
]


def build_openapi(settings: Settings) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document for this deployment's limits."""
    max_events = settings.max_events_per_request
    post_body = {
        "required": True,
        "content": {
            JSON: {
                "schema": {
                    "oneOf": [
                        _ref("EventIn"),
                        {
                            "type": "array",
                            "items": _ref("EventIn"),
                            "minItems": 1,
                            "maxItems": max_events,
                        },
                    ]
                }
            },
            "application/cloudevents+json": {"schema": _ref("CloudEvent")},
            "application/cloudevents-batch+json": {
                "schema": {
                    "type": "array",
                    "items": _ref("CloudEvent"),
                    "minItems": 1,
                    "maxItems": max_events,
                }
            },
        },
    }
    list_parameters = [
        *FILTERS,
        _query(
            "limit",
            f"Page size, 1 to {MAX_LIMIT}.",
            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
        ),
        _query(
            "order", "By occurred_at, ties by seq.", {"enum": ["desc", "asc"], "default": "desc"}
        ),
        _query("cursor", "next_cursor of the previous page (same filters and order)."),
    ]
    bucket_parameters = [
        *[{**p, "required": True} if p["name"] in ("since", "until") else p for p in FILTERS],
        _query(
            "width",
            "Bucket width: a number and m, h or d, e.g. 5m, 1h, 1d.",
            {"type": "string", "pattern": r"^[1-9][0-9]{0,4}[mhd]$", "default": "1h"},
        ),
        _query("group_by", "Count per value of this field.", {"enum": list(GROUP_KEYS)}),
        _query(
            "top",
            "Grouped: the groups with the most events in the range to count one by one; the "
            "rest are summed per bucket (`other`). Buckets × (top + 1) is at most "
            f"{settings.max_bucket_cells}.",
            {"type": "integer", "minimum": 1, "maximum": MAX_TOP, "default": DEFAULT_TOP},
        ),
    ]
    bad_query = _error(BAD_QUERY)
    tail_default = min(TAIL_DEFAULT_LIMIT, settings.tail_size)
    tail_parameters = [
        FILTERS[0],
        FILTERS[1],
        _query(
            "limit",
            f"How many of the newest events, 1 to {settings.tail_size} (the cache size). "
            "Not with follow.",
            {
                "type": "integer",
                "minimum": 1,
                "maximum": settings.tail_size,
                "default": tail_default,
            },
        ),
        _query(
            "follow",
            "true: a Server-Sent Events stream of each matching event as it commits "
            f"(id: its seq), ending after {settings.follow_max_s:g} s; reconnect with "
            "Last-Event-ID to go on where it stopped.",
            {"enum": ["true", "false"], "default": "false"},
        ),
        {
            "name": "Last-Event-ID",
            "in": "header",
            "required": False,
            "description": (
                "With follow: resume after this seq, or after this event id (an id several "
                "services used is resolved by the service filter)."
            ),
            "schema": {"type": "string"},
        },
    ]
    export_parameters = [
        *FILTERS,
        _query(
            "format",
            "ndjson (one event a line) or csv.",
            {"enum": list(EXPORT_FORMATS), "default": "ndjson"},
        ),
    ]
    unavailable = _error(
        "A backend (PostgreSQL or Redis) does not answer, or the writers "
        "are behind; see Retry-After."
    )
    by_service = _query(
        "service",
        "The service whose event this is: an id is unique within a service, so when "
        "several services' events have it, this chooses one (else 409).",
    )
    ambiguous = _json(
        _ref("AmbiguousId"),
        "Several services' events have this id; `services` names them: ask again with ?service=.",
    )
    damaged = _error(
        "Log damaged: the stored tree disagrees with its signed heads (someone changed the "
        "database), so no proof is given; `auditlog verify` says where."
    )
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "auditlog",
            "version": "1",
            "description": (
                "An append-only, tamper-evident audit trail. Producers POST events; auditors "
                "query them. Nothing stored can be changed or deleted."
            ),
        },
        "paths": {
            "/v1/events": {
                "post": {
                    "operationId": "postEvents",
                    "summary": f"Submit one event or an array of 1 to {max_events}: all or none.",
                    "requestBody": post_body,
                    "responses": {
                        "202": _json(_ref("Accepted"), "Every event is queued to be stored."),
                        "400": _error(
                            "The body is not JSON (or not UTF-8), or not an event or an array; "
                            "or the path or query string is not UTF-8."
                        ),
                        "413": _error("The body or the number of events is over the limit."),
                        "415": _error("The Content-Type is not one of those accepted."),
                        "422": _json(
                            _ref("ValidationErrors"),
                            "Some event breaks a rule; nothing was queued.",
                        ),
                        "503": _json(
                            _ref("IngestUnavailable"),
                            "Redis does not answer, or the writers are behind (nothing was "
                            "queued), or, with AUDITLOG_ACK_FSYNC, Redis did not confirm the "
                            "events on disk in time (they are queued: `ids`). See Retry-After.",
                        ),
                    },
                },
                "get": {
                    "operationId": "listEvents",
                    "summary": "List events, filtered, one page at a time (keyset cursor).",
                    "parameters": list_parameters,
                    "responses": {
                        "200": _json(_ref("EventPage"), "A page of events."),
                        "400": bad_query,
                        "503": unavailable,
                    },
                },
            },
            "/v1/events/{event_id}": {
                "get": {
                    "operationId": "getEvent",
                    "summary": "One stored event.",
                    "parameters": [
                        {
                            "name": "event_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        by_service,
                    ],
                    "responses": {
                        "200": _json(_ref("StoredEvent"), "The event."),
                        "400": bad_query,
                        "404": _error("No event (of this service) has this id."),
                        "409": ambiguous,
                        "503": unavailable,
                    },
                },
            },
            "/v1/events/{event_id}/proof": {
                "get": {
                    "operationId": "getInclusionProof",
                    "summary": "RFC 9162 inclusion proof of the event in a signed tree head.",
                    "parameters": [
                        {
                            "name": "event_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        _query(
                            "tree_size",
                            "Size of a recorded tree head (default: the latest).",
                            {"type": "integer", "minimum": 1},
                        ),
                        by_service,
                    ],
                    "responses": {
                        "200": _json(_ref("InclusionProof"), "The proof, paths in RFC 9162 order."),
                        "400": _error("tree_size is malformed, or the event is not in it."),
                        "404": _error("No such event, or no signed head of that size."),
                        "409": ambiguous,
                        "500": damaged,
                        "503": unavailable,
                    },
                },
            },
            "/v1/integrity/tree-head": {
                "get": {
                    "operationId": "getTreeHead",
                    "summary": "The latest signed tree head, or the one of a given size.",
                    "parameters": [
                        _query("size", "A recorded tree size.", {"type": "integer", "minimum": 1})
                    ],
                    "responses": {
                        "200": _json(_ref("TreeHead"), "The signed head."),
                        "400": bad_query,
                        "404": _error("The log is empty, or no head has that size."),
                        "503": unavailable,
                    },
                },
            },
            "/v1/integrity/consistency": {
                "get": {
                    "operationId": "getConsistencyProof",
                    "summary": "RFC 9162 consistency proof between two signed tree heads.",
                    "parameters": [
                        {
                            **_query(
                                "first", "The older tree size.", {"type": "integer", "minimum": 1}
                            ),
                            "required": True,
                        },
                        {
                            **_query(
                                "second", "The newer tree size.", {"type": "integer", "minimum": 1}
                            ),
                            "required": True,
                        },
                    ],
                    "responses": {
                        "200": _json(_ref("ConsistencyProof"), "The proof."),
                        "400": bad_query,
                        "404": _error("No signed head has one of the sizes."),
                        "500": damaged,
                        "503": unavailable,
                    },
                },
            },
            "/v1/integrity/public-key": {
                "get": {
                    "operationId": "getPublicKey",
                    "summary": "The Ed25519 public key that signs tree heads (raw, base64).",
                    "responses": {"200": _json(_ref("PublicKey"), "The key.")},
                },
            },
            **_log_paths(settings),
            **_viewer_paths(),
            "/v1/events/tail": {
                "get": {
                    "operationId": "tailEvents",
                    "summary": "The most recently committed events, newest first (or follow them).",
                    "parameters": tail_parameters,
                    "responses": {
                        "200": {
                            "description": (
                                "The newest matching events, each as getEvent returns it; "
                                "with follow=true, an event stream. The ETag names the "
                                "answer: send it back in If-None-Match to get 304 while "
                                "it has not changed."
                            ),
                            "headers": {"ETag": {"schema": {"type": "string"}}},
                            "content": {
                                JSON: {"schema": _ref("Tail")},
                                "text/event-stream": {"schema": _ref("TailMessage")},
                            },
                        },
                        "304": {"description": "The answer is still the one the ETag names."},
                        "400": bad_query,
                        "409": _json(
                            _ref("AmbiguousId"),
                            "With follow: Last-Event-ID is an event id several services' "
                            "events have, and the service filter does not choose one; send "
                            "the seq instead (each event's SSE id).",
                        ),
                        "503": _error(
                            "The database does not answer and neither does the cache, or this "
                            "process already serves its most followers; see Retry-After."
                        ),
                    },
                },
            },
            "/v1/events/export": {
                "get": {
                    "operationId": "exportEvents",
                    "summary": "Every matching event, oldest first (occurred_at, seq), streamed.",
                    "parameters": export_parameters,
                    "responses": {
                        "200": {
                            "description": (
                                "A download (Content-Disposition: attachment). CSV flattens "
                                "actor and subject into _id and _type columns and keeps "
                                "objects (data, context, …) as JSON cells."
                            ),
                            "headers": {"Content-Disposition": {"schema": {"type": "string"}}},
                            "content": {
                                media: {"schema": {"type": "string"}}
                                for media in (fmt.media_type for fmt in EXPORT_FORMATS.values())
                            },
                        },
                        "400": bad_query,
                        "503": _error(
                            "The database does not answer, or this process already runs its "
                            "most exports; see Retry-After."
                        ),
                    },
                },
            },
            "/v1/stats/buckets": {
                "get": {
                    "operationId": "countBuckets",
                    "summary": "Event counts per time bucket over [since, until), zero-filled.",
                    "parameters": bucket_parameters,
                    "responses": {
                        "200": _json(_ref("Buckets"), "Counts per bucket (and key)."),
                        "400": bad_query,
                        "422": _error("The query ran longer than a read may; narrow it."),
                        "503": unavailable,
                    },
                },
            },
            "/v1/keys": {
                "get": {
                    "operationId": "listKeys",
                    "summary": "The API keys, without secrets (admin). Keys are created, "
                    "revoked and limited with `auditlog keys`.",
                    "responses": {"200": _json(_ref("KeyList"), "Every key.")},
                },
            },
            "/healthz": {
                "get": {
                    "operationId": "health",
                    "summary": "The process answers.",
                    "responses": {"200": _json(_ref("Health"), "Alive.")},
                },
            },
            "/readyz": {
                "get": {
                    "operationId": "ready",
                    "summary": "PostgreSQL and Redis answer.",
                    "responses": {
                        "200": _json(_ref("Readiness"), "Ready."),
                        "503": _json(_ref("Readiness"), "Not ready; checks say why."),
                    },
                },
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": (
                        "Prometheus metrics of this API instance (all its workers) and the "
                        "queue depth; unauthenticated, like /healthz."
                    ),
                    "responses": {
                        "200": {
                            "description": "Prometheus text format 0.0.4 (OpenMetrics when "
                            "the Accept header asks for it).",
                            "content": {
                                "text/plain": {"schema": {"type": "string"}},
                                "application/openmetrics-text": {"schema": {"type": "string"}},
                            },
                        }
                    },
                },
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document.",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": {JSON: {"schema": {"type": "object"}}},
                        }
                    },
                },
            },
        },
        "components": {
            "schemas": _schemas(settings),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key's token (`auditlog keys create`). write keys "
                    "may POST events of their own services; read keys every GET under /v1; "
                    "admin keys both. Reads are themselves recorded in the log.",
                }
            },
        },
    }
    _secure(document["paths"])
    return document


_TILE_INDEX = {
    "name": "index",
    "in": "path",
    "required": True,
    "description": "The tile's index in groups of three digits, all but the last prefixed "
    "by x (1234067: x001/x234/067), then `.p/<W>` for a partial tile of W hashes.",
    "schema": {"type": "string", "pattern": r"^(x[0-9]{3}/)*[0-9]{3}(\.p/[1-9][0-9]{0,2})?$"},
}
_OCTETS = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


def _log_paths(settings: Settings) -> dict[str, Any]:
    """/v1/log/*: C2SP tlog-tiles. Public (no key) with AUDITLOG_PUBLIC_TILES, but for
    entry bundles."""
    public = {"x-public": True} if settings.public_tiles else {}
    bad_path = _error("The tile path is malformed (the description says how).")
    damaged = _error("Log damaged: a stored node or event is missing or changed.")
    return {
        "/v1/log/checkpoint": {
            "get": {
                **public,
                "operationId": "getCheckpoint",
                "summary": "The latest C2SP checkpoint (a signed note: origin, tree size, root "
                "hash, the log's signature, the witnesses' cosignatures).",
                "responses": {
                    "200": {
                        "description": "The checkpoint, as c2sp.org/tlog-checkpoint.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "404": _error("No checkpoint has been published yet."),
                    "503": _error("The database does not answer; see Retry-After."),
                },
            }
        },
        "/v1/log/tile/{level}/{index}": {
            "get": {
                **public,
                "operationId": "getTile",
                "summary": "A hash tile (c2sp.org/tlog-tiles): 256 hashes of one tree level, "
                "or W of them at the right edge (.p/W). Full tiles never change.",
                "parameters": [
                    {
                        "name": "level",
                        "in": "path",
                        "required": True,
                        "description": "The tile level, 0 to 63 (level 0: leaf hashes).",
                        "schema": {"type": "string", "pattern": r"^(0|[1-9][0-9]?)$"},
                    },
                    _TILE_INDEX,
                ],
                "responses": {
                    "200": {"description": "The hashes, 32 bytes each.", "content": _OCTETS},
                    "400": bad_path,
                    "404": _error("The tree does not have this tile (or not this many hashes)."),
                    "500": damaged,
                    "503": _error("The database does not answer; see Retry-After."),
                },
            }
        },
        "/v1/log/tile/entries/{index}": {
            "get": {
                "operationId": "getEntryBundle",
                "summary": "An entry bundle (c2sp.org/tlog-tiles): each event's leaf input (its "
                "RFC 8785 form) prefixed by its length, a big-endian uint16.",
                "parameters": [_TILE_INDEX],
                "responses": {
                    "200": {"description": "The entries.", "content": _OCTETS},
                    "400": bad_path,
                    "404": _error(
                        "The log does not have these entries yet, or one is longer than a "
                        "bundle's 65,535 bytes (read it with getEvent)."
                    ),
                    "500": damaged,
                    "503": _error("The database does not answer; see Retry-After."),
                },
            }
        },
    }


def _viewer_paths() -> dict[str, Any]:
    """/viewer/: the auditors' viewer, static files (auditlog.viewer); no key, no parameters."""
    cached = {"description": "Not modified: the If-None-Match tag is the file's ETag."}
    return {
        "/viewer": {
            "get": {
                "operationId": "viewer",
                "summary": "The auditors' viewer (an HTML page that asks for a key or a "
                "viewer token itself). Served with a strict Content-Security-Policy.",
                "responses": {
                    "200": {
                        "description": "index.html (Cache-Control: no-cache, ETag)",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    },
                    "304": cached,
                    "404": _error("The viewer is not built (scripts/setup.sh builds it)."),
                },
            }
        },
        "/viewer/{asset}": {
            "get": {
                "operationId": "viewerAsset",
                "summary": "A file of the built viewer; hashed names under assets/ are "
                "immutable (cached for a year), the others revalidated.",
                "parameters": [
                    {
                        "name": "asset",
                        "in": "path",
                        "required": True,
                        "description": "The file's path within the built viewer, e.g. "
                        "`assets/index-3fa2b1c0.js`.",
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The file, with its own media type.",
                        "content": {"*/*": {"schema": {"type": "string"}}},
                    },
                    "304": cached,
                    "400": _error("The path is not valid UTF-8."),
                    "404": _error("The built viewer has no such file."),
                },
            }
        },
    }


def _secure(paths: dict[str, Any]) -> None:
    """Every /v1 operation needs a key, and may answer 400, 401, 403 or 429; those marked
    public (x-public) answer without one, and 400."""
    for path, item in paths.items():
        if not path.startswith("/v1/"):
            continue
        for operation in item.values():
            operation["responses"].setdefault("400", _error(BAD_QUERY))
            if operation.pop("x-public", False):
                operation["security"] = [{}]
                continue
            operation["security"] = [{"bearer": []}]
            # Every /v1 operation refuses unknown parameters and a path or query that is
            # not UTF-8 (controllers/middleware.py: Utf8Only): the 400 above.
            operation["responses"].setdefault(
                "401", _error("No token, or not one of a live key (see WWW-Authenticate).")
            )
            operation["responses"].setdefault(
                "403", _error("The key's scope or services do not allow this.")
            )
            operation["responses"].setdefault(
                "429", _error("The key's rate limit is spent; see Retry-After.")
            )
