"""A per-client limit on failed logins (issue 16): past `login_rate_per_min` failures from one address in the last
minute, the login answers 429 with Retry-After until the oldest of them is a minute old.

Only failures count, so people who type their password right are never slowed down. The count lives in the
server process (several processes each keep their own: the limit per address is then that many times higher,
and the account lockout still holds across them)."""

from __future__ import annotations

import math
import threading
import time
from collections import deque

WINDOW_S = 60.0


class FailedLogins:
    """Failed login times per client address, in this process."""

    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._lock = threading.Lock()
        self._times: dict[str, deque[float]] = {}

    def retry_after(self, client: str) -> int | None:
        """Seconds until client may try again, or None when it may now."""
        now = time.monotonic()
        with self._lock:
            times = self._times.get(client)
            if times is None:
                return None
            while times and now - times[0] >= WINDOW_S:
                times.popleft()
            if not times:
                del self._times[client]
                return None
            if len(times) < self.per_minute:
                return None
            return max(1, math.ceil(WINDOW_S - (now - times[0])))

    def failed(self, client: str) -> None:
        """Note a failed login from client."""
        with self._lock:
            self._times.setdefault(client, deque()).append(time.monotonic())
            if len(self._times) > 100_000:  # bounded memory against address floods: forget the oldest entries
                for key in list(self._times)[:50_000]:
                    del self._times[key]
