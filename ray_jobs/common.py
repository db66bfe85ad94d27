"""Small pieces every Ray job shares: argument parsing, Ray start-up, reading splits."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

import ray

from adaclip.config import Config, load_config
from adaclip.data.annotations import VideoRecord, read_annotations
from adaclip.errors import DataError


def job_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The options every job takes: --config, key=value overrides, --json."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", help="YAML config (configs/*.yaml); defaults apply when omitted")
    parser.add_argument("overrides", nargs="*", help="config overrides such as model.top_k=8 train.epochs=2")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--verbose", action="store_true", help="show Ray's own progress bars and logs")
    return parser


def config_from(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


def quiet_ray(verbose: bool = False) -> None:
    """Keep Ray's progress bars and INFO logs in its log files (unless `verbose`), so a terminal
    shows our own progress; they stay in /tmp/ray/session_latest/logs."""
    if verbose:
        return
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    for name in ("ray", "ray.data", "ray.train", "ray.serve", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)


def init_ray(num_cpus: int | None = None, verbose: bool = False) -> None:
    """Join the cluster named by RAY_ADDRESS (as `ray job submit` sets it) or start a local Ray."""
    quiet_ray(verbose)
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=verbose, logging_level=logging.INFO if verbose else logging.WARNING)
    else:
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=verbose,
            logging_level=logging.INFO if verbose else logging.WARNING,
        )


def read_split(cfg: Config, split: str) -> list[VideoRecord]:
    records = read_annotations(cfg.data, split)
    if not records:
        raise DataError(f"split {split!r} of {cfg.data.annotations} has no videos")
    return records


def emit(result: dict[str, Any], as_json: bool, table: str) -> None:
    """Print machine output (--json) or the human table."""
    print(json.dumps(result, indent=None if as_json else 1, default=str) if as_json else table)
    sys.stdout.flush()
