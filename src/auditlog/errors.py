"""Domain errors. Services raise these; app.py maps each to one HTTP answer."""

from __future__ import annotations

from dataclasses import dataclass


class AuditlogError(Exception):
    """Base of every error the service answers on purpose."""


@dataclass(frozen=True)
class FieldError:
    """One problem with one submitted event: which item, which field, what is wrong."""

    index: int
    field: str
    message: str

    def as_dict(self) -> dict[str, object]:
        return {"index": self.index, "field": self.field, "message": self.message}


class MalformedBody(AuditlogError):
    """The body is not JSON (or not UTF-8): 400."""


class MalformedRequest(AuditlogError):
    """The request itself cannot be read (e.g. a path that is not UTF-8): 400."""


class UnsupportedMediaType(AuditlogError):
    """The Content-Type is not one the endpoint takes: 415."""


class BodyTooLarge(AuditlogError):
    """The body or the number of events is over the configured limit: 413."""


class InvalidEvents(AuditlogError):
    """At least one submitted event breaks a rule; nothing was enqueued: 422."""

    def __init__(self, errors: list[FieldError]):
        self.errors = errors
        noun = "problem" if len(errors) == 1 else "problems"
        super().__init__(f"{len(errors)} {noun} in the submitted event(s)")


class InvalidQuery(AuditlogError):
    """A query parameter is unknown, repeated or malformed: 400."""

    def __init__(self, parameter: str, message: str):
        self.parameter = parameter
        super().__init__(f"{parameter}: {message}")


class NotFound(AuditlogError):
    """The thing asked for does not exist: 404."""


class Unauthorized(AuditlogError):
    """No token, or not one of a live key: 401."""

    def __init__(self, message: str, *, token_given: bool):
        self.token_given = token_given
        super().__init__(message)


class Forbidden(AuditlogError):
    """The key is valid but may not do this: 403."""


class RateLimited(AuditlogError):
    """The key has spent its requests for now: 429 (Retry-After: whole seconds; wait_s:
    how long exactly)."""

    def __init__(self, message: str, retry_after_s: int, wait_s: float | None = None):
        self.retry_after_s = retry_after_s
        self.wait_s = float(retry_after_s) if wait_s is None else wait_s
        super().__init__(message)


class Overloaded(AuditlogError):
    """Too many events are waiting to be written; try again later: 503."""

    def __init__(self, message: str, retry_after_s: int):
        self.retry_after_s = retry_after_s
        super().__init__(message)


class Unavailable(AuditlogError):
    """A backing service (Redis, PostgreSQL) does not answer: 503."""

    def __init__(self, message: str, retry_after_s: int = 1):
        self.retry_after_s = retry_after_s
        super().__init__(message)


class NotDurable(AuditlogError):
    """The events are in the queue, but Redis did not confirm them on disk in time
    (AUDITLOG_ACK_FSYNC): 503 with their ids. They will most likely be stored; sending
    them again with the same ids stores each once either way."""

    def __init__(self, message: str, ids: list[str] | None = None, retry_after_s: int = 1):
        self.ids = ids or []
        self.retry_after_s = retry_after_s
        super().__init__(message)


class LogDamaged(AuditlogError):
    """The stored tree disagrees with itself or with its signed heads, so no proof can be
    given: 500, on purpose (`auditlog verify` says where the log was changed)."""
