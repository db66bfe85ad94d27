"""Snapshot one collection to a file, and restore it, on either backend.

edge: the shard directory, flushed while this process owns it (opening fails with the path named
when another process, such as a running app, owns it: stop that first), packed as a .tar.gz;
restore unpacks it as the collection's directory (refusing to overwrite one unless `force`) and
opens it to prove it loads.
server: Qdrant's own collection snapshot, created on the server and downloaded (then deleted
there); restore uploads it to the collection of the same name with snapshot priority (Qdrant
then replicates it to the collection's other nodes). Both talk to the server's REST API with the
configured key.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import httpx

from adaclip.config import IndexConfig
from adaclip.errors import ConfigError, IndexUnavailableError

CHUNK = 1 << 20


def snapshot(cfg: IndexConfig, collection: str, dim: int, out: Path) -> Path:
    """Write the collection's snapshot to `out` (atomically); returns `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.part")
    try:
        if cfg.backend == "edge":
            _edge_snapshot(cfg, collection, dim, tmp)
        else:
            _server_snapshot(cfg, collection, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def restore(cfg: IndexConfig, collection: str, dim: int, file: Path, force: bool = False) -> int:
    """Restore the collection from a snapshot file; returns its number of videos."""
    if not file.is_file():
        raise ConfigError(f"snapshot {file} does not exist")
    if cfg.backend == "edge":
        _edge_restore(cfg, collection, file, force)
    else:
        _server_restore(cfg, collection, file)
    with open_index_named(cfg, collection, dim) as index:  # opened: proof that it loads
        return index.count()


def open_index_named(cfg: IndexConfig, collection: str, dim: int):
    """The collection `collection` (not derived from a model version) as a VideoIndex."""
    from adaclip.index import VideoIndex, open_backend

    return VideoIndex(open_backend(cfg, collection, dim), dim=dim, model_version=collection)


# ---- edge ---------------------------------------------------------------------------------------


def _edge_snapshot(cfg: IndexConfig, collection: str, dim: int, out: Path) -> None:
    from adaclip.index import open_backend

    directory = Path(cfg.path) / collection
    if not directory.is_dir():
        raise ConfigError(f"no collection {collection!r} at {cfg.path}")
    backend = open_backend(cfg, collection, dim)  # takes the shard's lock: nobody writes meanwhile
    try:
        backend.shard.flush()
        with tarfile.open(out, "w:gz") as tar:
            tar.add(directory, arcname=collection)
    finally:
        backend.close()


def _edge_restore(cfg: IndexConfig, collection: str, file: Path, force: bool) -> None:
    target = Path(cfg.path) / collection
    if target.exists() and any(target.iterdir()) and not force:
        raise ConfigError(f"{target} exists: restore into another index.path, or pass --force to replace it")
    Path(cfg.path).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cfg.path, prefix=".restore-") as tmp:
        with tarfile.open(file, "r:gz") as tar:
            names = {Path(m.name).parts[0] for m in tar.getmembers()}
            if names != {collection}:
                raise ConfigError(f"{file} holds {sorted(names)}, not the collection {collection!r}")
            tar.extractall(tmp, filter="data")  # no absolute paths, links out or devices
        if target.exists():
            shutil.rmtree(target)
        os.replace(Path(tmp) / collection, target)


# ---- server -------------------------------------------------------------------------------------


def _server(cfg: IndexConfig) -> tuple[str, str | None]:
    from adaclip.index import server_address

    url, key = server_address(cfg)
    if url == ":memory:":
        raise ConfigError("snapshots of the server backend need a Qdrant server (index.url or QDRANT_URL)")
    return url.rstrip("/"), key


def _client(cfg: IndexConfig) -> httpx.Client:
    url, key = _server(cfg)
    return httpx.Client(
        base_url=url, headers={"api-key": key} if key else {}, timeout=max(60.0, cfg.timeout_s)
    )


def _check(r: httpx.Response, what: str) -> httpx.Response:
    if r.status_code >= 400:
        raise IndexUnavailableError(f"{what}: Qdrant answered {r.status_code}: {r.text[:300]}")
    return r


def _server_snapshot(cfg: IndexConfig, collection: str, out: Path) -> None:
    with _client(cfg) as client:
        created = _check(
            client.post(f"/collections/{collection}/snapshots", params={"wait": "true"}), "snapshot"
        )
        name = created.json()["result"]["name"]
        try:
            with (
                client.stream("GET", f"/collections/{collection}/snapshots/{name}") as r,
                open(out, "wb") as f,
            ):
                _check(r, "download the snapshot")
                for chunk in r.iter_bytes(CHUNK):
                    f.write(chunk)
        finally:
            client.delete(f"/collections/{collection}/snapshots/{name}")


def _server_restore(cfg: IndexConfig, collection: str, file: Path) -> None:
    with _client(cfg) as client, open(file, "rb") as f:
        _check(
            client.post(
                f"/collections/{collection}/snapshots/upload",
                params={"priority": "snapshot", "wait": "true"},
                files={"snapshot": (file.name, f, "application/octet-stream")},
            ),
            "restore the snapshot",
        )
