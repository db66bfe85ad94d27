"""Helpers of the fault tests: real `adaclip serve` and `adaclip ingest` subprocesses, signalled
or killed the way a supervisor or a crash would, then checked from outside (HTTP, the index files,
/proc).

Each subprocess is started in a session of its own (`start_new_session=True`), so everything it
starts (raylet, GCS, agents, `ray::*` workers, which take process groups of their own) shares its
session id: that is how a test finds what is left and kills all of it. Each gets its own Ray temp
dir (`RAY_TMPDIR`) and no `RAY_ADDRESS`, so it starts a fresh local Ray that cannot meet the test
session's own or another developer's. Nothing here sleeps to wait: every wait polls with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import yaml
from processes import TAG_VAR, free_port, kill_session, one_encoder, session_processes, wait_until

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny.yaml"
CORPUS_VIDEOS = 24
START_S = 240.0  # `adaclip serve` to ready: ~40-70 s on a busy 2-core machine
POLL_S = 0.1


def adaclip_command() -> list[str]:
    """The `adaclip` console script of this interpreter's environment (else `python -m`)."""
    script = Path(sys.executable).with_name("adaclip")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "adaclip_cli.main"]


# ---- subprocesses -------------------------------------------------------------------------------


class Launcher:
    """Starts subprocesses in sessions of their own, each with a private Ray temp dir and a tag in
    its environment; finds, kills and checks what each one started; `cleanup()` kills whatever is
    left of them and removes the temp dirs."""

    def __init__(self) -> None:
        self.tags: dict[int, str] = {}  # session id (the leader's pid) -> tag
        self.temp_dirs: list[Path] = []

    def env(self, tag: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        # short: Ray's socket paths live below it (AF_UNIX paths are limited to 107 bytes)
        ray_tmp = Path(tempfile.mkdtemp(prefix="rayf-", dir="/tmp"))
        self.temp_dirs.append(ray_tmp)
        env.update(RAY_TMPDIR=str(ray_tmp), RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
        env[TAG_VAR] = tag
        return env

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen:
        tag = uuid.uuid4().hex
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=self.env(tag), stdin=subprocess.DEVNULL, start_new_session=True, **kwargs
        )
        self.tags[proc.pid] = tag  # session id == pid of the session leader
        return proc

    def processes(self, proc: subprocess.Popen) -> dict[int, str]:
        """Live processes of `proc`'s session: itself and all it started (Ray's included)."""
        return session_processes(proc.pid, self.tags[proc.pid])

    def kill(self, proc: subprocess.Popen, deadline_s: float = 20.0) -> None:
        """SIGKILL `proc` and every process it started until none is left: `kill -9` of all that a
        crash or an OOM kill of the container would take."""
        kill_session(proc.pid, self.tags[proc.pid], deadline_s)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=deadline_s)  # reap the leader

    def assert_gone(self, proc: subprocess.Popen, deadline_s: float, what: str) -> None:
        """Every process of `proc`'s session ends within the deadline (polled), else fail listing them."""
        deadline = time.monotonic() + deadline_s
        while procs := self.processes(proc):
            if time.monotonic() > deadline:
                listing = "\n".join(f"  {pid} {cmd[:160]}" for pid, cmd in sorted(procs.items()))
                raise AssertionError(
                    f"{what}: {len(procs)} processes left after {deadline_s:g} s:\n{listing}"
                )
            time.sleep(POLL_S)  # poll interval

    def cleanup(self) -> None:
        for sid, tag in self.tags.items():
            kill_session(sid, tag)
        for path in self.temp_dirs:
            shutil.rmtree(path, ignore_errors=True)


class ServeApp:
    """`adaclip serve` on 127.0.0.1 over the directories of `workdir` (index, staging, media),
    through a small Serve config file like configs/serve.yaml; `start()` may be called again after
    the previous process ended (a restart on the same directories, on a new port)."""

    def __init__(self, launcher: Launcher, workdir: Path, grace_s: float = 60.0):
        self.launcher, self.workdir, self.grace_s = launcher, workdir, grace_s
        self.index_path = workdir / "index"
        self.staging_dir = workdir / "staging"
        self.media_dir = workdir / "media"
        self.config = workdir / "serve.yaml"
        self.config.write_text(yaml.safe_dump(self.serve_config()))
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def serve_config(self) -> dict[str, Any]:
        return {
            "applications": [
                {
                    "name": "adaclip",
                    "route_prefix": "/",
                    "import_path": "serve.app:build_app",
                    "args": {
                        "config": str(TINY),
                        "overrides": [f"index.path={self.index_path}"],
                        "staging_dir": str(self.staging_dir),
                        "media_dir": str(self.media_dir),
                        "streams_dir": str(self.workdir / "streams"),
                        "max_upload_bytes": 4 * 1024 * 1024,
                    },
                    "deployments": [{"name": name, **options} for name, options in one_encoder(0.5).items()],
                }
            ]
        }

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "the previous process still runs"
        self.starts += 1
        self.port = free_port()
        self.log = self.workdir / f"serve-{self.starts}"
        argv = [*adaclip_command(), "serve", "--config", str(self.config), "--host", "127.0.0.1"]
        argv += ["--port", str(self.port), "--grace-s", str(self.grace_s)]
        with open(f"{self.log}.out", "wb") as out, open(f"{self.log}.err", "wb") as err:
            self.proc = self.launcher.popen(argv, stdout=out, stderr=err)

    def output(self, tail: int = 4000) -> str:
        text = ""
        for suffix in (".out", ".err"):
            path = Path(f"{self.log}{suffix}")
            text += f"--- {path.name}\n" + (path.read_text(errors="replace")[-tail:] if path.exists() else "")
        return text

    def wait_ready(self, deadline_s: float = START_S) -> None:
        """Until the command says it serves (after `serve.run` returned) and /healthz is 200."""

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"adaclip serve exited with {self.proc.returncode}\n{self.output()}")
            if "ready at" not in Path(f"{self.log}.out").read_text(errors="replace"):
                return False
            try:
                return httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_until(ready, deadline_s, f"adaclip serve ready on {self.url}", interval_s=0.2)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.output()}") from None

    def wait_exit(self, deadline_s: float) -> int:
        try:
            return self.proc.wait(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"adaclip serve still running {deadline_s:g} s after the signal\n{self.output()}"
            ) from None

    def kill_all(self) -> None:
        """kill -9 of the command and every process it started (its whole session)."""
        self.launcher.kill(self.proc)

    def processes(self) -> dict[int, str]:
        return self.launcher.processes(self.proc)

    def assert_gone(self, deadline_s: float, what: str) -> None:
        self.launcher.assert_gone(self.proc, deadline_s, what)


def open_served_index(index_path: Path, seed: int = 0):
    """The Edge index the app or `adaclip ingest` wrote (tiny config, random-init weights of `seed`:
    the app's and the job's default), opened with the project's API; use as a context manager."""
    from adaclip.config import load_config
    from adaclip.encoding import load_encoder_model
    from adaclip.index import open_index

    cfg = load_config(TINY)
    model = load_encoder_model(cfg, seed=seed)
    return open_index(cfg.index.model_copy(update={"path": index_path}), model.embed_dim, model.model_version)


def all_point_ids(index) -> list[str]:
    """Every point id of the index, as stored (a repeated id would show twice)."""
    return [p.id for page in index.backend.scan(None, 256) for p in page]


def expected_ids(paths: list[Path], seed: int = 0) -> dict[str, Path]:
    """video id -> file, as the app and the job compute them (content hash and model version)."""
    from adaclip.config import load_config
    from adaclip.encoding import content_hash, load_encoder_model
    from adaclip.index import video_id

    version = load_encoder_model(load_config(TINY), seed=seed).model_version
    return {video_id(content_hash(p), version): p for p in paths}
