"""Helpers of the tests that start servers and processes: a free port, and polling with a deadline
(tests never sleep to wait)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition: Callable[[], Any], deadline_s: float, what: str, interval_s: float = 0.1) -> Any:
    """Poll `condition` until it returns something truthy (returned), failing at the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {deadline_s:g} s: {what}")
        time.sleep(interval_s)  # poll interval, not a synchronisation delay
