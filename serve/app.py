"""The Serve application builder: `import_path: serve.app:build_app` in configs/serve.yaml.

`build_app(args)` validates the args into `AppArgs` and the model config they name (so a typo
fails at deploy time with the field named), then binds the ingress (which holds the index) ->
VideoEncoder.
Deployment settings (resources, replicas, batch sizes) have their defaults in the
`@serve.deployment` decorators and their overrides in the Serve config's `deployments:` only;
every deployment declares a fractional CPU share so the whole app fits a 2-core machine, and the
encoder asks for a GPU when the cluster has one. Nothing here does I/O at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.serve import Application
from ray.serve.deployment import Deployment

from adaclip.checkpoint import CHECKPOINT_FILE
from adaclip.config import Config, load_config
from adaclip.errors import ConfigError
from serve.encoder import VideoEncoder
from serve.ingress import SearchAPI
from serve.schemas import AppArgs, ModelSpec

DeploymentOptions = dict[str, dict[str, Any]]


def _cluster_gpus() -> float:
    """GPUs of the Ray cluster this runs in (0 when Ray is not initialised)."""
    import ray

    return float(ray.cluster_resources().get("GPU", 0)) if ray.is_initialized() else 0.0


def with_gpu(deployment: Deployment, options: dict[str, Any]) -> dict[str, Any]:
    """`options` plus one GPU per replica when the cluster has one and the replica's actor options
    do not say how many (`num_gpus: 0` keeps it on CPU). The actor options are the options' own
    `ray_actor_options`, which replace the decorator's whole dict as in Serve, else the decorator's."""
    actor = options.get("ray_actor_options", deployment.ray_actor_options or {})
    if "num_gpus" in actor or not _cluster_gpus():
        return options
    return {**options, "ray_actor_options": {**actor, "num_gpus": 1}}


def serving_config(args: AppArgs) -> Config:
    """The validated config with the index path made absolute (replicas may run elsewhere)."""
    if any(item.partition("=")[0].strip() == "index.api_key" for item in args.overrides):
        raise ConfigError(
            "index.api_key in the app's overrides would be stored by Serve with the deployment args; "
            "set QDRANT_API_KEY in the replicas' environment instead (a Kubernetes Secret, or export it)"
        )
    cfg = load_config(args.config, args.overrides)
    if args.checkpoint is not None and not (
        args.checkpoint.is_file() or (args.checkpoint / CHECKPOINT_FILE).is_file()
    ):
        raise ConfigError(f"checkpoint {args.checkpoint} does not exist (model.checkpoint=PATH)")
    index = cfg.index.model_copy(update={"path": Path(cfg.index.path).expanduser().resolve()})
    return cfg.model_copy(update={"index": index})


def build_application(args: AppArgs, deployments: DeploymentOptions | None = None) -> Application:
    """Bind the app; `deployments` maps a deployment name to extra `.options(...)` (as in a Serve
    config file's `deployments:` list)."""
    args = args.split_checkpoint()
    cfg = serving_config(args)
    spec = ModelSpec(
        config=cfg.model_dump(mode="json"),
        checkpoint=str(args.checkpoint) if args.checkpoint else None,
        seed=args.seed,
    ).model_dump()
    extra = deployments or {}
    encoder = VideoEncoder.options(**with_gpu(VideoEncoder, extra.get("VideoEncoder", {}))).bind(spec)
    ingress = extra.get("SearchAPI", {})
    replicas = ingress.get("num_replicas", 1)
    scaling = ingress.get("autoscaling_config") or {}
    if cfg.index.backend == "edge" and (replicas != 1 or scaling.get("max_replicas", 1) != 1):
        raise ConfigError(
            "SearchAPI holds the index, and an embedded Edge index has one owner: run one replica, "
            "or index.backend=server with a Qdrant server for several"
        )
    return SearchAPI.options(**ingress).bind(encoder, spec, args.model_dump(mode="json"))


def build_app(args: dict[str, Any]) -> Application:
    """Typed application builder named by a Serve config's `import_path` (see AppArgs)."""
    return build_application(AppArgs.model_validate(args or {}))
