"""What a write to InfluxDB can end in, as three typed errors every transport raises alike."""

from __future__ import annotations

import email.utils
import time


class WriteError(Exception):
    """Base of the errors a transport raises from send()."""


class WriteRejected(WriteError):
    """The server refused the content (400/422): some lines are bad; retrying the same body cannot help."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class TooLarge(WriteError):
    """The request body is larger than the server accepts (413): send smaller batches."""

    def __init__(self, message: str, status: int = 413):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class Retryable(WriteError):
    """The write did not happen for a reason that passes (network, timeout, 5xx, 429, auth, missing database)."""

    def __init__(self, status: int | None, retry_after_s: float | None, message: str):
        where = f"HTTP {status}" if status is not None else "no response"
        super().__init__(f"{where}: {message}")
        self.status = status
        self.retry_after_s = retry_after_s
        self.message = message


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None if absent or invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def classify(status: int, message: str, retry_after: str | None) -> WriteError:
    """Map an HTTP error status to the typed error the writer acts on."""
    if status in (400, 422):
        return WriteRejected(status, message)
    if status == 413:
        return TooLarge(message, status)
    # 429, 5xx, and anything unexpected (401/403/404 are configuration or set-up problems an
    # operator fixes): keep the data and retry; the connection_lost event carries the message.
    return Retryable(status, parse_retry_after(retry_after), message)
