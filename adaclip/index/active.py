"""Which model's collection is live: the alias `index.collection_prefix` and the model behind it.

Every model version has its own collection, so vectors of two models never mix. The *active*
record names the collection searches use and how to rebuild the model that wrote it (checkpoint,
seed), so a running service moves to a new model in one step (`adaclip reindex`), and a service
started with another model serves the active one. Backends store it (`IndexBackend.write_active`):

- Qdrant server: a real collection alias (`{prefix}` -> `{prefix}_{version}`, switched in one
  request) and the record in the target collection's metadata.
- Embedded Edge (no aliases): `{index.path}/{prefix}.active.json`, replaced atomically.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from adaclip.config import IndexConfig
from adaclip.errors import ConfigError

METADATA_KEY = "active_model"


class ActiveModel(BaseModel):
    """The live collection and what rebuilds its model (`load_encoder_model(cfg, checkpoint, seed)`)."""

    collection: str
    model_version: str
    checkpoint: str | None = None
    seed: int = 0


# -- Edge: a record file ------------------------------------------------------------------------


def record_file(root: str | Path, alias: str) -> Path:
    return Path(root).expanduser() / f"{alias}.active.json"


def read_record_file(root: str | Path, alias: str) -> ActiveModel | None:
    path = record_file(root, alias)
    return ActiveModel.model_validate_json(path.read_text()) if path.is_file() else None


def write_record_file(root: str | Path, alias: str, active: ActiveModel) -> None:
    """Replace the record atomically (fsync, then rename): readers see the old or the new one."""
    path = record_file(root, alias)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".active-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(active.model_dump_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


# -- Qdrant server: an alias and collection metadata --------------------------------------------


def alias_target(client: Any, alias: str) -> str | None:
    return next((a.collection_name for a in client.get_aliases().aliases if a.alias_name == alias), None)


def read_alias(client: Any, alias: str) -> ActiveModel | None:
    target = alias_target(client, alias)
    if target is None:
        return None
    metadata = client.get_collection(target).config.metadata or {}
    return ActiveModel.model_validate(metadata[METADATA_KEY]) if METADATA_KEY in metadata else None


def switch_alias(client: Any, alias: str, active: ActiveModel) -> None:
    """Record the model in its collection's metadata, then point the alias at it in one request."""
    from qdrant_client import models

    client.update_collection(active.collection, metadata={METADATA_KEY: active.model_dump()})
    create = models.CreateAlias(collection_name=active.collection, alias_name=alias)
    ops: list[Any] = [models.CreateAliasOperation(create_alias=create)]
    if alias_target(client, alias) is not None:
        ops.insert(0, models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
    client.update_collection_aliases(ops)


def read_active(cfg: IndexConfig) -> ActiveModel | None:
    """The active record of the configured store, without opening a collection."""
    from adaclip.index.server import server_client

    if cfg.backend == "edge":
        return read_record_file(cfg.path, cfg.collection_prefix)
    with server_client(cfg) as client:
        return read_alias(client, cfg.collection_prefix)


def drop_collection(cfg: IndexConfig, collection: str) -> bool:
    """Delete a collection that is not the active one (an old model's, after a reindex); False when
    there is none. An Edge collection must not be open in another process."""
    from adaclip.index.server import server_client

    active = read_active(cfg)
    if active is not None and active.collection == collection:
        raise ConfigError(f"{collection} is the active collection (model {active.model_version})")
    if cfg.backend == "edge":
        root = Path(cfg.path).expanduser().resolve()
        path = root / collection
        if path.parent != root or not path.is_dir():
            return False
        shutil.rmtree(path)
        return True
    with server_client(cfg) as client:
        return bool(client.collection_exists(collection) and client.delete_collection(collection))
