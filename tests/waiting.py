"""Waiting for something a test expects to happen: one rule for every test (a deadline, never a speed check)."""

from __future__ import annotations

import asyncio
import time


def wait_until(predicate, timeout: float = 60.0, what: str = "condition", interval: float = 0.02):
    """Poll predicate until it is truthy and return its value; fail naming what and the last value after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


async def until(predicate, timeout: float = 60.0, what: str = "condition", interval: float = 0.02):
    """The same, inside an event loop (the loop keeps running while it waits)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")
