"""`adaclip reindex --checkpoint NEW`: move a running service's index to a new model.

    adaclip reindex --checkpoint runs/msrvtt-v2/best --url http://127.0.0.1:8000

The service re-encodes every stored video from its kept file into the new model's collection
while it keeps answering with the old one, then switches searches and uploads in one step (the
collection alias; see adaclip.index.active). Prints the service's report; exit 1 if it failed.
The old collection stays until `adaclip index drop COLLECTION`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import httpx

from serve.client import DEFAULT_URL

DONE = ("done", "failed")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="adaclip reindex", description="move a running service to a new model")
    p.add_argument("--checkpoint", help="the new model's checkpoint (a path the service can read)")
    p.add_argument("--seed", type=int, default=0, help="seed of a random-init model (no checkpoint)")
    p.add_argument(
        "--allow-missing", action="store_true", help="switch even if some videos cannot be re-encoded"
    )
    p.add_argument("--url", default=DEFAULT_URL, help=f"service URL (default {DEFAULT_URL})")
    p.add_argument("--api-key-env", help="environment variable holding the service's X-API-Key")
    p.add_argument("--timeout", type=float, default=24 * 3600.0, help="seconds to wait for the switch")
    return p.parse_args(argv)


def reindex(
    url: str,
    checkpoint: str | None,
    seed: int = 0,
    allow_missing: bool = False,
    headers: dict[str, str] | None = None,
    timeout: float = 24 * 3600.0,
    poll_s: float = 1.0,
) -> dict[str, Any]:
    """Start the reindex and poll until it is done or failed; the service's last status."""
    base = url.rstrip("/")
    body = {"checkpoint": checkpoint, "seed": seed, "allow_missing": allow_missing}
    response = httpx.post(f"{base}/admin/reindex", json=body, headers=headers, timeout=60)
    if response.status_code != 202:
        raise RuntimeError(f"{url} answered {response.status_code}: {response.text[:300]}")
    status, deadline = response.json(), time.monotonic() + timeout
    while status["state"] not in DONE:
        if time.monotonic() > deadline:
            raise TimeoutError(f"reindex still {status['state']} after {timeout:.0f} s: {status}")
        time.sleep(poll_s)
        status = httpx.get(f"{base}/admin/reindex", timeout=60).json()
    return status


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    headers = {"X-API-Key": os.environ.get(args.api_key_env, "")} if args.api_key_env else None
    try:
        status = reindex(args.url, args.checkpoint, args.seed, args.allow_missing, headers, args.timeout)
    except (httpx.HTTPError, RuntimeError, TimeoutError) as e:
        print(f"adaclip reindex: {e}", file=sys.stderr)
        return 1
    print(json.dumps(status))
    return 0 if status["state"] == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
