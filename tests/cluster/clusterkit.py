"""Helpers of the cluster tests (pytest puts this folder on sys.path): free ports, polling with
deadlines, and a real multi-node Ray cluster on 127.0.0.1 made of `ray start --block` processes.

Every `ray start --block` process is started in a session of its own with a private, short
`--temp-dir` under /tmp and every port picked free, so the cluster cannot meet the test session's
own Ray (`ray_local`) or another developer's. It is stopped by signalling those processes (each
stops its own raylet, and the head its GCS and dashboard), then by SIGKILL of whatever is left of
their sessions; `ray stop` is never used, as it would kill every Ray process on the machine.
Nothing here sleeps to wait: every wait polls with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from processes import free_port, http_answers, kill_session, wait_until

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny.yaml"
RAY = str(Path(sys.executable).with_name("ray"))  # the CLI of the environment running the tests
POLL_S = 0.2


def last_json_result(log: str) -> dict:
    """The job's --json object: Ray's progress bars may share its line in the streamed log."""
    start = log.rfind('{"metrics"')
    assert start >= 0, log[-3000:]
    return json.JSONDecoder().raw_decode(log, start)[0]


class LocalCluster:
    """A head node (with the dashboard, so `ray job submit` works) and worker nodes, each a
    `ray start --block` process on 127.0.0.1 with its own CPUs and a custom resource naming it."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.nodes: dict[str, subprocess.Popen] = {}  # name -> `ray start --block` process
        self.temp_dirs: list[str] = []
        self.gcs_port = free_port()
        self.dashboard = f"http://127.0.0.1:{free_port()}"
        self.env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "RAY_AUTH_MODE": "token",  # token authentication stays on, with a token of our own
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",  # no Serve to drain: stop at once
        }
        for key in ("RAY_ADDRESS", "RAY_TMPDIR"):
            self.env.pop(key, None)

    @property
    def gcs(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    def _ports(self) -> list[str]:
        # the defaults (dashboard agent 52365, client server 10001, ...) clash with any other Ray
        flags = (
            "--dashboard-agent-listen-port",
            "--dashboard-agent-grpc-port",
            "--runtime-env-agent-port",
            "--metrics-export-port",
            "--node-manager-port",
            "--object-manager-port",
        )
        return [f"{flag}={free_port()}" for flag in flags]

    def start_node(self, name: str, num_cpus: int, head: bool = False) -> None:
        temp_dir = tempfile.mkdtemp(prefix="rayc-", dir="/tmp")  # short: socket paths are capped
        self.temp_dirs.append(temp_dir)
        argv = [RAY, "start", "--block", f"--num-cpus={num_cpus}", "--num-gpus=0"]
        argv += ["--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}", "--disable-usage-stats"]
        argv += [f"--resources={json.dumps({name: 1})}", *self._ports()]
        if head:
            argv += ["--head", f"--port={self.gcs_port}", "--include-dashboard=true"]
            argv += ["--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard.rsplit(':', 1)[1]}"]
            argv += [f"--ray-client-server-port={free_port()}"]
        else:
            argv += [f"--address={self.gcs}"]
        log = (self.workdir / f"{name}.log").open("w")
        with log:
            self.nodes[name] = subprocess.Popen(
                argv, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def log(self, name: str, tail: int = 3000) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def alive_nodes(self) -> list[dict[str, Any]]:
        """The cluster's nodes that are ALIVE, from `ray list nodes` (the state API)."""
        done = subprocess.run(
            [RAY, "list", "nodes", "--address", self.dashboard, "--format", "json", "--detail"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            return []
        try:
            nodes = json.loads(done.stdout)
        except json.JSONDecodeError:
            return []
        return [n for n in nodes if n.get("state") == "ALIVE"]

    def node_ids_by_name(self) -> dict[str, str]:
        """Node name (its custom resource) -> node id, for the nodes alive now."""
        names = {}
        for node in self.alive_nodes():
            for name in self.nodes:
                if name in (node.get("resources_total") or {}):
                    names[name] = node["node_id"]
        return names

    def wait_ready(self, deadline_s: float = 180.0) -> dict[str, str]:
        """Until the dashboard answers and every started node is alive; returns name -> node id."""

        def ready() -> dict[str, str] | None:
            for name, proc in self.nodes.items():
                if proc.poll() is not None:
                    raise AssertionError(
                        f"ray start of {name} exited with {proc.returncode}\n{self.log(name)}"
                    )
            if not http_answers(f"{self.dashboard}/api/version"):
                return None
            names = self.node_ids_by_name()
            return names if set(names) == set(self.nodes) else None

        try:
            return wait_until(ready, deadline_s, f"nodes {sorted(self.nodes)} alive", interval_s=1.0)
        except AssertionError as e:
            logs = "\n".join(f"--- {n}\n{self.log(n)}" for n in self.nodes)
            raise AssertionError(f"{e}\n{logs}") from None

    def stop_node(self, name: str, deadline_s: float = 60.0) -> None:
        """SIGTERM the node's `ray start --block` (it stops its own processes), then SIGKILL
        whatever is left of its session."""
        proc = self.nodes[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=deadline_s)
        self.kill_session(proc)

    @staticmethod
    def kill_session(proc: subprocess.Popen, deadline_s: float = 20.0) -> None:
        kill_session(proc.pid, deadline_s=deadline_s)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=deadline_s)

    def stop(self) -> None:
        """Workers first, then the head; every process of every node's session ends."""
        for name in [n for n in self.nodes if n != "head_node"] + [n for n in self.nodes if n == "head_node"]:
            with contextlib.suppress(AssertionError):
                self.stop_node(name, deadline_s=30.0)
        for path in self.temp_dirs:
            shutil.rmtree(path, ignore_errors=True)
