"""`adaclip search "text"`: query a running search service and print the ranked videos with moments.

adaclip search "a small red circle in the top left" --url http://127.0.0.1:8000 --k 5
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="adaclip search", description="search a running adaclip service by text"
    )
    parser.add_argument("query", help="the text to search for")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"service URL (default {DEFAULT_URL})")
    parser.add_argument("--k", type=int, default=10, help="number of results (1..1000)")
    parser.add_argument("--mode", default="rerank", choices=["fast", "rerank", "exact"])
    parser.add_argument("--filter", action="append", default=[], help="payload filter key:value (repeatable)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the answer")
    parser.add_argument("--json", action="store_true", help="print the service's JSON answer")
    return parser.parse_args(argv)


def format_moment(seconds: float | None) -> str:
    """mm:ss.s, e.g. 75.25 -> '01:15.2'; '-' when unknown."""
    if seconds is None:
        return "-"
    minutes, rest = divmod(max(0.0, float(seconds)), 60.0)
    return f"{int(minutes):02d}:{rest:04.1f}"


def format_results(answer: dict[str, Any]) -> str:
    """A table: rank, score, moment, title (source)."""
    results = answer.get("results", [])
    head = f"{len(results)} results for {answer.get('query')!r} ({answer.get('mode')}, {answer.get('took_ms', 0):.1f} ms)"
    lines = [head, f"{'rank':>4}  {'score':>7}  {'moment':>7}  title (source)"]
    for r in results:
        payload = r.get("payload") or {}
        title = payload.get("title") or "-"
        source = payload.get("source")
        label = f"{title} ({source})" if source and source != title else title
        lines.append(f"{r['rank']:>4}  {r['score']:>7.4f}  {format_moment(r.get('moment')):>7}  {label}")
    return "\n".join(lines)


def search(url: str, query: str, k: int, mode: str, filters: list[str], timeout: float) -> dict[str, Any]:
    params: list[tuple[str, str | int]] = [("q", query), ("k", k), ("mode", mode)]
    params += [("filter", f) for f in filters]
    response = httpx.get(f"{url.rstrip('/')}/search", params=params, timeout=timeout)
    if response.status_code != 200:
        try:
            error = response.json()["error"]
            message = f"{error['code']}: {error['message']}"
        except (ValueError, KeyError, TypeError):
            message = response.text[:300]
        raise RuntimeError(f"{url} answered {response.status_code}: {message}")
    return response.json()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        answer = search(args.url, args.query, args.k, args.mode, args.filter, args.timeout)
    except httpx.HTTPError as e:
        print(f"adaclip search: cannot reach {args.url} ({e}); is `adaclip serve` running?", file=sys.stderr)
        return 1
    except RuntimeError as e:
        print(f"adaclip search: {e}", file=sys.stderr)
        return 1
    print(json.dumps(answer) if args.json else format_results(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
