"""Helpers of the tests that start servers and processes: a free port, polling with a deadline
(tests never sleep to wait), whether an HTTP server answers, and the processes of a session (a
subprocess started with `start_new_session=True` and everything it started), found in /proc and
killed; and the Serve `deployments:` of a test app that fits 2 CPUs."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

TAG_VAR = "ADACLIP_TEST_TAG"  # a launch may set it, with a fresh value, to tell its processes apart


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


def http_answers(url: str) -> bool:
    """Whether a server answers at `url` at all (an HTTP error status counts: it is up)."""
    try:
        urllib.request.urlopen(url, timeout=2).close()
    except urllib.error.HTTPError:  # e.g. 401 without a token: the server is up
        return True
    except (urllib.error.URLError, OSError):
        return False
    return True


def session_processes(sid: int, tag: str | None = None) -> dict[int, str]:
    """pid -> command line of every live process (zombies excluded) of session `sid`; with `tag`,
    only those carrying `TAG_VAR=tag` in their environment (what one launch started, and nothing
    that reused a pid since: what may be killed)."""
    found = {}
    marker = f"{TAG_VAR}={tag}".encode() if tag is not None else None
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
            # fields after the command name (which may hold spaces and parentheses)
            state, _ppid, _pgrp, session = stat[stat.rindex(")") + 2 :].split()[:4]
            if int(session) != sid or state == "Z":
                continue
            environ = Path(f"/proc/{entry.name}/environ").read_bytes().split(b"\0") if marker else []
            if marker is not None and marker not in environ:
                continue  # not started by that launch
            cmd = (
                Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            )
        except (OSError, ValueError):
            continue  # exited meanwhile
        found[int(entry.name)] = cmd.strip() or f"[{stat[stat.index('(') + 1 : stat.rindex(')')]}]"
    return found


def kill_session(sid: int, tag: str | None = None, deadline_s: float = 20.0) -> None:
    """SIGKILL every process of session `sid` (of launch `tag`) until none is left: what a crash or
    an OOM kill of the container would take."""
    deadline = time.monotonic() + deadline_s
    while procs := session_processes(sid, tag):
        for pid in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise AssertionError(f"processes survive SIGKILL: {procs}")
        time.sleep(0.1)  # poll interval


def one_encoder(cpus: float, ingress_cpus: float | None = None) -> dict[str, dict[str, Any]]:
    """Serve deployment options: one VideoEncoder replica with `cpus` (a second only costs start-up
    time in a test), and the ingress's CPU share when given."""
    out: dict[str, dict[str, Any]] = {
        "VideoEncoder": {
            "ray_actor_options": {"num_cpus": cpus},
            "autoscaling_config": {"min_replicas": 1, "max_replicas": 1},
        }
    }
    if ingress_cpus is not None:
        out["SearchAPI"] = {"ray_actor_options": {"num_cpus": ingress_cpus}}
    return out
