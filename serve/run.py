"""`adaclip serve`: start the search app on a local Ray (or RAY_ADDRESS) and serve until SIGTERM or
Ctrl-C, then drain and stop.

    adaclip serve --config configs/serve.yaml --host 127.0.0.1 --port 8000 \
        index.path=data/index model.checkpoint=runs/tiny/best

`--config` is a Serve config file (its first application's args and deployment options are used;
its http_options give the default host and port) or a plain model config such as configs/tiny.yaml.
`key=value` overrides go to the model config; `model.checkpoint=PATH` serves a checkpoint.

Stopping (SIGTERM from Kubernetes, systemd or `kill`; SIGINT from Ctrl-C):

1. the proxies stop taking requests: their `/-/healthz` answers 503 and the app's routes are
   withdrawn, so a new request gets Serve's 404 instead of starting work that would be cut;
2. requests already in flight finish, for at most `--grace-s` seconds (a second signal ends the
   wait at once);
3. Serve stops the replicas (each waits up to its `graceful_shutdown_timeout_s` for a request still
   running, and the ingress flushes and releases the index), then `ray.shutdown()` stops every Ray
   process this command started; the exit status is 0.

Why the handlers are installed right after `ray.init`: Ray's core worker installs a C++ failure
signal handler (absl) for SIGTERM in the driver. On SIGTERM it prints a stack trace, arms a 3 s
`alarm()` whose handler aborts the process, and re-raises the signal to Ray's Python handler
(`sys.exit`). Any clean-up longer than 3 s then ended in SIGABRT (status 134) halfway through, with
the Ray agents left running. Our Python handlers replace that handler for SIGTERM and SIGINT for the
whole life of the app, including start-up (the failure handler still covers crashes).

Under systemd use `KillMode=mixed` (SIGTERM to this process only): the default control-group mode
signals the Ray processes too, which then stop before the in-flight requests are answered.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from adaclip.errors import ConfigError

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000
DEFAULT_GRACE_S = 25.0  # drain; with the stop of Serve and Ray it fits Kubernetes' default 30 s
REPLICA_STOP_TIMEOUT_S = 5.0  # graceful_shutdown_timeout_s: a request still running after the drain
REPLICA_STOP_LOOP_S = 0.2  # graceful_shutdown_wait_loop_s: Serve's 2 s default slows every stop
PROXY_DRAIN_PERIOD_S = "0.5"  # RAY_SERVE_PROXY_MIN_DRAINING_PERIOD_S for a Ray started here (30 s default)
POLL_S = 0.1
DEPLOYMENTS = ("SearchAPI", "VideoEncoder")
HTTP_PASSED = ("request_timeout_s", "keep_alive_timeout_s")  # Serve config http_options honoured here


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="adaclip serve", description="start the Ray Serve video search app")
    parser.add_argument(
        "--config", help="Serve config (configs/serve.yaml) or a model config (configs/tiny.yaml)"
    )
    parser.add_argument("--host", help=f"bind address (default: the config's, else {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, help=f"HTTP port (default: the config's, else {DEFAULT_PORT})")
    parser.add_argument(
        "--name", default=None, help="Serve application name (default: the config's, or adaclip)"
    )
    parser.add_argument(
        "--grace-s",
        type=float,
        default=DEFAULT_GRACE_S,
        help="on SIGTERM/SIGINT, wait at most this long for in-flight requests before stopping "
        f"(default {DEFAULT_GRACE_S:g}; keep it below the supervisor's kill timeout)",
    )
    parser.add_argument("overrides", nargs="*", help="overrides such as index.path=DIR model.checkpoint=PATH")
    args = parser.parse_intermixed_args(argv)
    if args.grace_s < 0:
        parser.error("--grace-s must be >= 0")
    return args


def read_serve_config(path: str | None) -> dict[str, Any]:
    """{name, route_prefix, args, deployments, http_options} from a Serve or a model config file."""
    if path is None:
        return {"name": "adaclip", "route_prefix": "/", "args": {}, "deployments": {}, "http_options": {}}
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file {file} does not exist")
    tree = yaml.safe_load(file.read_text()) or {}
    if "applications" not in tree:  # a model config: serve it with default app args
        return {
            "name": "adaclip",
            "route_prefix": "/",
            "args": {"config": str(file)},
            "deployments": {},
            "http_options": {},
        }
    apps = tree["applications"]
    if not apps:
        raise ConfigError(f"{file}: 'applications' is empty")
    app = apps[0]
    args = dict(app.get("args") or {})
    if args.get("config") and not Path(args["config"]).is_absolute():
        # relative to the current directory, as `serve run` reads it
        args["config"] = str(Path(args["config"]).resolve())
    deployments = {
        d["name"]: {k: v for k, v in d.items() if k != "name"} for d in app.get("deployments") or []
    }
    return {
        "name": app.get("name", "adaclip"),
        "route_prefix": app.get("route_prefix", "/"),
        "args": args,
        "deployments": deployments,
        "http_options": tree.get("http_options") or {},
    }


def with_stop_options(deployments: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Deployment options plus how replicas stop (a Serve config's own values win)."""
    out = {name: dict(options) for name, options in deployments.items()}
    for name in DEPLOYMENTS:
        options = out.setdefault(name, {})
        options.setdefault("graceful_shutdown_timeout_s", REPLICA_STOP_TIMEOUT_S)
        options.setdefault("graceful_shutdown_wait_loop_s", REPLICA_STOP_LOOP_S)
    return out


class StartupInterrupted(BaseException):
    """A stop signal arrived before the app was serving (a BaseException, as KeyboardInterrupt, so
    that no `except Exception` inside Ray swallows it)."""


class StopSignals:
    """SIGTERM and SIGINT as a stop request.

    Before `serving()` a signal raises StartupInterrupted in the main thread (start-up can take a
    minute: it must not run to the end first); afterwards it only sets `requested`, and a second
    signal sets `hurry` (end the drain now). Nothing is raised once the stop has begun.
    """

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.hurry = threading.Event()
        self.signum: int | None = None
        self._raise = True

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def serving(self) -> None:
        self._raise = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested.is_set():
            self.hurry.set()
            return
        self.signum = signum
        self.requested.set()
        if self._raise:
            self._raise = False
            raise StartupInterrupted(signal.Signals(signum).name)

    def wait(self) -> None:
        while not self.requested.wait(3600):
            pass


def wait_for_signal() -> None:
    """Block until SIGINT (Ctrl-C) or SIGTERM (for callers that started Ray and Serve themselves)."""
    stop = StopSignals()
    stop.serving()
    stop.install()
    stop.wait()


def log(message: str) -> None:
    print(f"adaclip serve: {message}", file=sys.stderr, flush=True)


def proxy_handles() -> list[Any]:
    """The Serve proxy actors (one per node), from the Serve controller (Serve internals: `drain`
    falls back to stopping at once if they change)."""
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    return list(ray.get(controller.get_proxies.remote(), timeout=10).values())


def drain(grace_s: float, hurry: threading.Event) -> bool:
    """Stop the proxies taking requests and wait until their in-flight requests are answered, at
    most `grace_s` seconds or until `hurry` is set; whether everything finished.

    A draining proxy answers 503 on /-/healthz (load balancers stop sending); withdrawing the routes
    makes it refuse new requests, while requests it already holds keep their handles and finish.
    `is_drained` is true once a draining proxy has no request in flight.
    """
    import ray

    deadline = time.monotonic() + grace_s
    call_s = max(1.0, min(10.0, grace_s))  # each set-up call; a dead controller must not hang here
    try:
        proxies = proxy_handles()
        ray.get([p.update_draining.remote(True) for p in proxies], timeout=call_s)
        ray.get([p._update_routes_in_proxies.remote({}) for p in proxies], timeout=call_s)
    except Exception as e:  # a Ray without these calls, or a dead controller: stop without draining
        log(f"cannot drain the proxies ({type(e).__name__}: {e}); stopping now")
        return False
    pending = proxies
    while pending:
        if hurry.is_set():
            log("second signal: stopping without waiting for in-flight requests")
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            log(f"requests still in flight after {grace_s:g} s (--grace-s); stopping anyway")
            return False
        try:
            drained = ray.get([p.is_drained.remote() for p in pending], timeout=max(left, 0.1))
        except Exception as e:
            log(f"lost a proxy while draining ({type(e).__name__}); stopping now")
            return False
        pending = [p for p, done in zip(pending, drained, strict=True) if not done]
        if pending:
            hurry.wait(POLL_S)  # poll interval; a second signal ends it at once
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spec = read_serve_config(args.config)
    host = args.host or spec["http_options"].get("host", DEFAULT_HOST)
    port = args.port or spec["http_options"].get("port", DEFAULT_PORT)
    name = args.name or spec["name"]
    app_args = dict(spec["args"])
    app_args["overrides"] = list(app_args.get("overrides") or []) + list(args.overrides)

    import ray
    from ray import serve

    from serve.app import build_application
    from serve.schemas import AppArgs

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    app_args = AppArgs.model_validate(app_args)  # fail on bad args before starting anything
    started_ray = not ray.is_initialized()
    if started_ray and os.environ.get("RAY_ADDRESS"):
        ray.init()
    elif started_ray:
        # inherited by the proxy: a draining proxy with nothing in flight counts as drained after
        # this long (Serve's 30 s default is meant for nodes leaving a cluster)
        os.environ.setdefault("RAY_SERVE_PROXY_MIN_DRAINING_PERIOD_S", PROXY_DRAIN_PERIOD_S)
        ray.init(include_dashboard=False)
    stop = StopSignals()
    stop.install()  # after ray.init, which installs handlers of its own (see the module docstring)
    serving = False
    try:
        app = build_application(app_args, with_stop_options(spec["deployments"]))
        http = {key: spec["http_options"][key] for key in HTTP_PASSED if key in spec["http_options"]}
        serve.start(http_options={**http, "host": host, "port": port})
        serve.run(app, name=name, route_prefix=spec["route_prefix"])
        prefix = spec["route_prefix"].rstrip("/")
        print(
            f"adaclip search app {name!r} ready at http://{host}:{port}{prefix}/ (docs at {prefix}/docs); "
            "Ctrl-C or SIGTERM stops it"
        )
        sys.stdout.flush()
        serving = True
        stop.serving()
        stop.wait()
    except StartupInterrupted as e:
        log(f"{e} during start-up: stopping")
    finally:
        stop.serving()  # no exception from a signal during the clean-up
        start = time.monotonic()
        if serving:
            log(f"{signal.Signals(stop.signum).name}: draining (at most {args.grace_s:g} s)")
            if drain(args.grace_s, stop.hurry):
                log(f"in-flight requests finished in {time.monotonic() - start:.1f} s")
        log("stopping Serve" + (" and Ray" if started_ray else ""))
        serve.shutdown()
        if started_ray:
            ray.shutdown()
        log(f"stopped ({time.monotonic() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
