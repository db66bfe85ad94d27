"""Dispatch `adaclip <command> ...` to the module that owns the command.

Each command is a `main(argv=None)` in its own layer, imported lazily so `adaclip synth` does not pay
for importing Ray and `adaclip --help` answers at once.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("adaclip.data.synth", "write a synthetic corpus of real video files with captions"),
    "train": ("ray_jobs.train", "train AdaCLIP with Ray Train (local Ray, or RAY_ADDRESS)"),
    "eval": ("ray_jobs.evaluate", "evaluate a checkpoint or a zero-shot open_clip model"),
    "experiment": ("ray_jobs.experiment", "experiments, e.g. `experiment selection`"),
    "ingest": ("ray_jobs.ingest", "bulk-ingest a directory or annotation file into the index"),
    "index": (
        "adaclip_cli.index",
        "snapshot, restore or drop a collection (embedded Edge or a Qdrant server)",
    ),
    "reindex": ("adaclip_cli.reindex", "move a running service's index to a new model (collection alias)"),
    "serve": ("serve.run", "start the Ray Serve search app"),
    "search": ("serve.client", "query a running search service"),
    "demo": ("adaclip_cli.demo", "the whole product end to end on embedded defaults"),
    "bench": ("benchmarks.run", "benchmarks that print a table and write JSON"),
}


def usage() -> str:
    lines = ["usage: adaclip <command> [--config FILE] [key=value ...] [--json]", "", "commands:"]
    lines += [f"  {name:<11} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"adaclip: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
