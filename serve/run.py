"""`adaclip serve`: start the search app on a local Ray (or RAY_ADDRESS) and block until Ctrl-C.

    adaclip serve --config configs/serve.yaml --host 127.0.0.1 --port 8000 \
        index.path=data/index model.checkpoint=runs/tiny/best

`--config` is a Serve config file (its first application's args and deployment options are used;
its http_options give the default host and port) or a plain model config such as configs/tiny.yaml.
`key=value` overrides go to the model config; `model.checkpoint=PATH` serves a checkpoint.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import yaml

from adaclip.errors import ConfigError

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000


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
    parser.add_argument("overrides", nargs="*", help="overrides such as index.path=DIR model.checkpoint=PATH")
    return parser.parse_intermixed_args(argv)


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


def wait_for_signal() -> None:
    """Block until SIGINT (Ctrl-C) or SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(3600):
        pass


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
        ray.init(include_dashboard=False)
    try:
        app = build_application(app_args, spec["deployments"])
        serve.start(http_options={"host": host, "port": port})
        serve.run(app, name=name, route_prefix=spec["route_prefix"])
        prefix = spec["route_prefix"].rstrip("/")
        print(
            f"adaclip search app {name!r} ready at http://{host}:{port}{prefix}/ (docs at {prefix}/docs); Ctrl-C stops it"
        )
        sys.stdout.flush()
        wait_for_signal()
    finally:
        print("shutting down", file=sys.stderr)
        serve.shutdown()
        if started_ray:
            ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
