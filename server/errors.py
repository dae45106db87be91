"""Domain errors raised by services; the app turns each into one JSON error response."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    """Every error response: a machine-readable code and a sentence for people."""

    code: str = Field(description="Stable machine-readable error code, e.g. stage_out_of_order")
    detail: str = Field(description="What went wrong, in plain words")


class DomainError(Exception):
    """A refused request; status is the HTTP status the API answers with."""

    status = 400

    def __init__(self, detail: str, code: str = "invalid_request", *, keep_audit: bool = False):
        super().__init__(detail)
        self.detail = detail
        self.code = code
        # True when the service recorded the refusal itself (failed login or signature) and made no
        # other change: the session commits the audit entry instead of rolling it back.
        self.keep_audit = keep_audit


class Unauthorized(DomainError):
    """No valid credentials."""

    status = 401


class Forbidden(DomainError):
    """Valid credentials, but this role or agent may not do this."""

    status = 403


class NotFound(DomainError):
    """The record does not exist."""

    status = 404


class TooLarge(DomainError):
    """The request carries more than the configured limit."""

    status = 413


class UnsupportedMediaType(DomainError):
    """The content is not of a kind this endpoint takes."""

    status = 415


class TooManyRequests(DomainError):
    """Too many attempts from one client in a short time; retry_after_s says when to try again."""

    status = 429

    def __init__(self, detail: str, code: str = "too_many_requests", *, retry_after_s: int = 60):
        super().__init__(detail, code)
        self.retry_after_s = retry_after_s


class Conflict(DomainError):
    """The request breaks a rule of the process (order, state, lock, signature)."""

    status = 409


def error_responses(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI `responses` entries describing the error body for the given statuses."""
    text = {400: "Invalid request", 401: "Not authenticated", 403: "Not allowed for this role or agent",
            404: "Record not found", 409: "Refused by a process rule", 422: "Malformed request",
            413: "Larger than the configured limit", 415: "Not a kind of content this endpoint takes",
            429: "Too many attempts from this client; see Retry-After"}
    return {s: {"model": ErrorBody, "description": text[s]} for s in statuses if s != 422}


# 400: a body that is not JSON or form data at all (rendered as ErrorBody by the app's handler, code body_unreadable).
COMMON_ERRORS = error_responses(400, 401, 403, 404, 409)
