"""Train AdaCLIP end to end on Ray Train (selector, Hard-Top-k, CLIP, aggregation).

Local:   adaclip train --config configs/tiny.yaml
Cluster: ray job submit --working-dir . -- python -m ray_jobs.train --config configs/msrvtt.yaml

Ray Data decodes every video once into the frame store (`ray_jobs.frame_store`) and streams the
stored rows into `TorchTrainer` workers (DDP), in a new order every epoch. The
loss is the symmetric cross-entropy over the global batch gathered from every worker. Each epoch
ends with validation on rank 0, `ray.train.report` of the metrics from every rank and, on rank 0,
a checkpoint; `<output_dir>/last` lets a killed job resume and `<output_dir>/best` keeps the best
text-to-video R@1.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from adaclip.checkpoint import CHECKPOINT_FILE, read_checkpoint, save_checkpoint
from adaclip.config import Config
from adaclip.data.annotations import caption_table
from adaclip.errors import ConfigError, DataError
from adaclip.evaluation import evaluate_batches
from adaclip.models import AdaCLIP
from adaclip.ops import k_schedule, tau_schedule
from adaclip.training import RetrievalTask, adamw, train_step
from ray_jobs.common import config_from, emit, init_ray, job_parser, read_split
from ray_jobs.data import check_error_ratio, eval_batches, eval_dataset, train_dataset, training_batches
from ray_jobs.frame_store import MANIFEST

Batch = dict[str, torch.Tensor]
PREFETCH_BATCHES = 2
SHUFFLE_BUFFER_BATCHES = 4  # local shuffle buffer, in batches


def lr_lambda(total_steps: int, warmup: float):
    """Linear warm-up over `warmup` of the steps, then cosine decay to zero (SPEC section 5)."""
    warm = max(1, int(total_steps * warmup))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def exact_batches(batches: Iterator[Batch], size: int, failed: list[int]) -> Iterator[Batch]:
    """Batches of exactly `size` good rows; rows marked ``failed`` are dropped and their videos
    appended to `failed`. Ray Data can hand out a short batch mid-stream when a local shuffle
    buffer is used, and a short batch on one DDP worker only desynchronises the others."""
    pending: list[Batch] = []
    held = 0
    for batch in batches:
        bad = batch.pop("failed").bool()
        if bad.any():
            failed.extend(batch["video_index"][bad].tolist())
            batch = {key: value[~bad] for key, value in batch.items()}
        pending.append(batch)
        held += len(batch["tokens"])
        while held >= size:
            rows = {key: torch.cat([p[key] for p in pending]) for key in pending[0]}
            yield {key: value[:size] for key, value in rows.items()}
            pending = [{key: value[size:] for key, value in rows.items()}]
            held -= size


def in_step(batches: Iterator[Batch], device: torch.device) -> Iterator[Batch]:
    """Stop every worker at the same step: each step all workers agree that each has a batch.
    The rest of the stream is drained, so the split stream still finishes its epoch."""
    if ray.train.get_context().get_world_size() == 1:
        yield from batches
        return
    while True:
        batch = next(batches, None)
        have = torch.tensor([batch is not None], dtype=torch.int32, device=device)
        dist.all_reduce(have, op=dist.ReduceOp.MIN)
        if not have.item():
            break
        yield batch
    for _ in batches:
        pass


def to_torch(batch: dict[str, np.ndarray], device: torch.device) -> Batch:
    return {key: torch.from_numpy(value).to(device, non_blocking=True) for key, value in batch.items()}


def train_epoch(
    task, model: AdaCLIP, optimizer, scheduler, shard, cfg: Config, epoch: int, batch: int, from_store: bool
):
    """One pass over this worker's shard: its statistics and the videos that failed to decode."""
    device = ray.train.torch.get_device()
    k = k_schedule(epoch, cfg.model.num_frames, cfg.model.top_k, cfg.train.k_warmup_epochs)
    tau = tau_schedule(epoch, cfg.train.init_tau, cfg.train.tau_decay, cfg.train.min_tau)
    world = ray.train.get_context().get_world_size()
    amp = cfg.train.precision == "amp"
    task.train()
    losses, samples, failed, first_batch_s = [], 0, [], None
    start = time.perf_counter()
    videos = shard.iter_batches(
        batch_size=batch,
        batch_format="numpy",
        prefetch_batches=PREFETCH_BATCHES,
        local_shuffle_buffer_size=SHUFFLE_BUFFER_BATCHES * batch,
    )
    stream = (to_torch(b, device) for b in training_batches(videos, cfg, keep_failed=not from_store))
    for rows in in_step(exact_batches(stream, batch, failed), device):
        first_batch_s = first_batch_s or time.perf_counter() - start
        loss = train_step(task, model, optimizer, rows, k, tau, cfg.train.grad_clip, amp)
        scheduler.step()
        losses.append(loss.item() / world)
        samples += len(rows["tokens"]) * world
    stats = {"loss": sum(losses) / len(losses) if losses else float("nan"), "k": k, "tau": tau}
    stats.update(samples=samples, first_batch_s=first_batch_s, train_s=time.perf_counter() - start)
    stats["steps_per_worker"] = steps_per_worker(len(losses), world, device)
    return stats, set(failed)


def validate(
    model: AdaCLIP, shard, texts: list[str], caption_to_video: list[int], batch: int, context_length: int
) -> dict[str, Any]:
    """Text-to-video and video-to-text metrics on the validation stream."""
    return evaluate_batches(model, texts, caption_to_video, eval_batches(shard, batch), context_length)


def train_loop_per_worker(loop: dict[str, Any]) -> list[dict[str, Any]]:
    """Build, resume, then train/validate/report each epoch (Ray Train's fixed loop shape).

    Returns this worker's metrics of every epoch it ran (rank 0's reach `Result.return_value`).
    """
    cfg = Config.model_validate(loop["config"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.train.seed + rank)
    device = ray.train.torch.get_device()
    model = AdaCLIP.from_config(cfg.model, device=device)
    optimizer = adamw(model, cfg.train)
    total_steps = max(1, loop["steps_per_epoch"] * cfg.train.epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(total_steps, cfg.train.warmup_proportion)
    )
    start_epoch, best_r1 = 0, -1.0
    checkpoint, state = ray.train.get_checkpoint(), None  # set when Ray retries within this run
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = read_checkpoint(d)
    elif loop["resume_from"]:  # a re-run after the job was killed: <output_dir>/last
        state = read_checkpoint(loop["resume_from"])
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best_r1 = state["epoch"] + 1, state["best_r1"]
    task = ray.train.torch.prepare_model(
        RetrievalTask(model, cfg.train.distill_weight),
        parallel_strategy_kwargs={"find_unused_parameters": True},
    )
    per_worker = cfg.train.batch_size // world
    workers = worker_placement(loop.get("frame_store"), rank, world)
    history: list[dict[str, Any]] = []
    for epoch in range(start_epoch, cfg.train.epochs):
        start = time.perf_counter()
        shard = ray.train.get_dataset_shard("train")
        stats, failed = train_epoch(
            task, model, optimizer, scheduler, shard, cfg, epoch, per_worker, loop["from_store"]
        )
        metrics: dict[str, Any] = {"epoch": epoch, **stats, "workers": workers}
        metrics["samples_per_s"] = stats["samples"] / (time.perf_counter() - start)
        metrics["decode_failed"] = count_failed(failed, loop, world, device)
        check_error_ratio(
            {"seen": loop["videos"], "failed": metrics["decode_failed"], "failures": {}},
            cfg.data.max_error_ratio,
        )
        if rank == 0:
            val = validate(
                model,
                ray.train.get_dataset_shard("val"),
                loop["val_texts"],
                loop["val_c2v"],
                per_worker,
                cfg.data.max_text_tokens,
            )
            metrics["val_s"] = time.perf_counter() - start - stats["train_s"]
            metrics.update({f"val_t2v_{k_}": v for k_, v in val["t2v"].items()})
            metrics.update({f"val_v2t_{k_}": v for k_, v in val["v2t"].items()})
            improved = metrics["val_t2v_R1"] > best_r1
            best_r1 = max(best_r1, metrics["val_t2v_R1"])
            # <output_dir>/last is what a re-run resumes from after the job was killed and
            # <output_dir>/best the best validation R@1 so far (on a cluster, output_dir must be
            # storage every node sees); Ray also copies each checkpoint into its run folder.
            output = Path(loop["output_dir"])
            state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
            last = save_checkpoint(
                output / "last" / CHECKPOINT_FILE,
                model,
                cfg,
                epoch=epoch,
                best_r1=best_r1,
                metrics=metrics,
                **state,
            )
            if improved:
                (output / "best").mkdir(parents=True, exist_ok=True)
                shutil.copyfile(last, output / "best" / CHECKPOINT_FILE)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(last.parent))
        else:
            ray.train.report(metrics)
        history.append(metrics)
    return history


def worker_placement(frame_store: str | None, rank: int, world: int) -> list[dict[str, Any]]:
    """Where every rank trains: its Ray node id, and the frame store it reads if it sees that
    store's manifest from there (on a cluster, `data.cache_dir` must be storage every node sees)."""
    seen = frame_store if frame_store and (Path(frame_store) / MANIFEST).is_file() else None
    mine = {"rank": rank, "node_id": ray.get_runtime_context().get_node_id(), "frame_store": seen}
    if world == 1:
        return [mine]
    everyone: list[Any] = [None] * world
    dist.all_gather_object(everyone, mine)
    return everyone


def steps_per_worker(steps: int, world: int, device: torch.device) -> list[int]:
    """Every worker's step count this epoch (DDP needs them equal; reported to show it)."""
    if world == 1:
        return [steps]
    parts = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(world)]
    dist.all_gather(parts, torch.tensor([steps], device=device))
    return [int(p.item()) for p in parts]


def count_failed(failed: set[int], loop: dict[str, Any], world: int, device: torch.device) -> int:
    """Videos that failed to decode: those the store recorded, or, for a stream without a store,
    the failed rows every worker saw this epoch."""
    if loop["from_store"]:
        return loop["decode_failed"]
    if world == 1:
        return len(failed)
    count = torch.tensor([len(failed)], device=device)
    dist.all_reduce(count)
    return int(count.item())


def steps_per_epoch(records, cfg: Config) -> int:
    rows = sum(len(r.captions) for r in records) if cfg.data.caption_mode == "all" else len(records)
    return max(1, rows // cfg.train.batch_size)


def check_trainable(cfg: Config) -> None:
    """Training settings that only conflict when training (evaluation may score a distilled
    checkpoint with `model.aggregation=qscore`)."""
    if cfg.train.distill_weight and cfg.model.aggregation == "qscore":
        raise ConfigError(
            "train.distill_weight needs a video vector: model.aggregation=qscore is the teacher"
        )


def build_trainer(cfg: Config) -> tuple[ray.train.torch.TorchTrainer, dict[str, str]]:
    """A TorchTrainer over the config's train/val splits, resuming from `<output_dir>/last` if
    present, and the videos known to have failed to decode. Decoding into the frame store (when
    `data.cache_dir` is set) happens here, before the Train workers hold any CPU."""
    check_trainable(cfg)
    train_records, val_records = read_split(cfg, cfg.data.train_split), read_split(cfg, cfg.data.val_split)
    texts, c2v = caption_table(val_records, cfg.data.caption_mode)
    train_ds, train_store = train_dataset(train_records, cfg)
    val_ds, val_store = eval_dataset(val_records, cfg)
    failures = {**(train_store.failures if train_store else {}), **(val_store.failures if val_store else {})}
    output = Path(cfg.train.output_dir).resolve()
    last = output / "last"
    trainer = ray.train.torch.TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config": cfg.model_dump(mode="json"),
            "steps_per_epoch": steps_per_epoch(train_records, cfg),
            "val_texts": texts,
            "val_c2v": c2v,
            "videos": len(train_records),
            "decode_failed": len(train_store.failures) if train_store else 0,
            "from_store": train_store is not None,
            "frame_store": str(train_store.path) if train_store else None,
            "output_dir": str(output),
            # Train v2 dropped `resume_from_checkpoint` (it raises): the workers load it themselves.
            "resume_from": str(last) if (last / CHECKPOINT_FILE).exists() else None,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.train.num_workers,
            use_gpu=cfg.train.use_gpu,
            resources_per_worker={"CPU": cfg.train.cpus_per_worker},
        ),
        run_config=ray.train.RunConfig(
            name=f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(output / "ray"),
            failure_config=ray.train.FailureConfig(max_failures=1),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute="val_t2v_R1", checkpoint_score_order="max"
            ),
        ),
        datasets={"train": train_ds, "val": val_ds},
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
    )
    return trainer, failures


def data_error_of(error: Exception) -> DataError | None:
    """The DataError a worker raised (too many corrupt videos), if that is why training failed."""
    for failure in getattr(error, "worker_failures", {}).values():
        if isinstance(failure, DataError):
            return failure
        cause = getattr(failure, "cause", None)
        if isinstance(cause, DataError):
            return cause
    return None


def run_training(cfg: Config) -> dict[str, Any]:
    """Fit; checkpoints end up in `<output_dir>/last` and `<output_dir>/best`."""
    trainer, failures = build_trainer(cfg)
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as e:
        data_error = data_error_of(e)
        if data_error is not None:  # too many corrupt videos: say that, not Ray's worker traceback
            raise DataError(str(data_error).splitlines()[-1]) from e
        raise
    output = Path(cfg.train.output_dir).resolve()
    return {
        "metrics": result.metrics or {},  # None when a resumed run had no epoch left
        "history": result.return_value or [],  # per-epoch metrics of this run (a resumed run starts late)
        "last": str(output / "last"),
        "best": str(output / "best"),
        "decode_failures": failures,
    }


def main(argv: list[str] | None = None) -> int:
    args = job_parser("adaclip train", __doc__.splitlines()[0]).parse_args(argv)
    cfg = config_from(args)
    init_ray(verbose=args.verbose)
    out = run_training(cfg)
    m = out["metrics"]
    table = (
        f"epoch {m.get('epoch')}  loss {m.get('loss', float('nan')):.4f}  "
        f"val t2v R@1 {m.get('val_t2v_R1', float('nan')):.1f}  R@5 {m.get('val_t2v_R5', float('nan')):.1f}\n"
        f"checkpoints: {out['last']} (last), {out['best']} (best)"
    )
    emit(out, args.json, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
