"""`adaclip index snapshot|restore|drop`: back up one collection (the one of the configured model)
to a file and restore it, on the embedded Edge store or a Qdrant server (see
adaclip.index.snapshot); drop an old model's collection after `adaclip reindex`.

    adaclip index snapshot --out backups/videos.snap --config configs/tiny.yaml index.path=data/index
    adaclip index restore backups/videos.snap --config configs/tiny.yaml index.path=data/restored
    adaclip index snapshot --out s.snap index.backend=server model.checkpoint=runs/msrvtt/best  # QDRANT_URL
    adaclip index drop videos_0123abcd --config configs/tiny.yaml index.path=data/index

The collection is the model's (its version names it, as for the app and `adaclip ingest`); an Edge
store must not be open in a running app meanwhile.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from adaclip.checkpoint import split_checkpoint
from adaclip.config import load_config
from adaclip.encoding import load_encoder_model, resolve_config
from adaclip.errors import AdaclipError
from adaclip.index import collection_name
from adaclip.index.active import drop_collection
from adaclip.index.snapshot import restore, snapshot

ACTIONS = {
    "snapshot": "write the collection to a file",
    "restore": "restore the collection from one",
    "drop": "delete a collection that is not the active one (an old model's, after adaclip reindex)",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    action = argv[0] if argv else None
    if action not in ACTIONS:
        usage = " | ".join(f"adaclip index {a} ..." for a in ACTIONS)
        raise SystemExit(f"usage: {usage}\n(got {action!r}; see adaclip index snapshot --help)")
    p = argparse.ArgumentParser(prog=f"adaclip index {action}", description=ACTIONS[action])
    p.add_argument("--config", help="YAML config (configs/*.yaml)")
    p.add_argument("--seed", type=int, default=0, help="seed of a random-init model (as the app's)")
    if action == "snapshot":
        p.add_argument("--out", type=Path, required=True, help="snapshot file to write")
    elif action == "drop":
        p.add_argument("collection", help="the collection to delete, e.g. videos_<old model version>")
    else:
        p.add_argument("file", type=Path, help="snapshot file written by `adaclip index snapshot`")
        p.add_argument("--force", action="store_true", help="replace an existing Edge collection")
    p.add_argument("overrides", nargs="*", help="overrides such as index.path=DIR model.checkpoint=PATH")
    args = p.parse_intermixed_args(argv[1:])
    args.action = action
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        overrides, checkpoint = split_checkpoint(args.overrides)
        cfg = resolve_config(load_config(args.config, overrides), checkpoint)
        if args.action == "drop":
            print(
                json.dumps(
                    {"collection": args.collection, "dropped": drop_collection(cfg.index, args.collection)}
                )
            )
            return 0
        model = load_encoder_model(cfg, checkpoint, seed=args.seed)
        collection = collection_name(cfg.index.collection_prefix, model.model_version)
        dim = int(model.embed_dim)
        if args.action == "snapshot":
            path = snapshot(cfg.index, collection, dim, args.out)
            result = {"collection": collection, "snapshot": str(path), "bytes": path.stat().st_size}
        else:
            count = restore(cfg.index, collection, dim, args.file, force=args.force)
            result = {"collection": collection, "restored_from": str(args.file), "videos": count}
    except AdaclipError as e:
        print(f"adaclip index {args.action}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
