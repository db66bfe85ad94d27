"""Train AdaCLIP end to end on Ray Train (selector, Hard-Top-k, CLIP, aggregation).

Local:   adaclip train --config configs/tiny.yaml
Cluster: ray job submit --working-dir . -- python -m ray_jobs.train --config configs/msrvtt.yaml

Ray Data decodes frames on CPU workers and streams them into `TorchTrainer` workers (DDP). The
loss is the symmetric cross-entropy over the global batch gathered from every worker. Each epoch
ends with validation on rank 0, `ray.train.report` of the metrics from every rank and, on rank 0,
a checkpoint; `<output_dir>/last` lets a killed job resume and `<output_dir>/best` keeps the best
text-to-video R@1.
"""

from __future__ import annotations

import math
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch import nn

from adaclip.checkpoint import CHECKPOINT_FILE, read_checkpoint, save_checkpoint
from adaclip.config import Config
from adaclip.data.annotations import caption_table
from adaclip.errors import DataError
from adaclip.evaluation import embed_texts, embed_videos, retrieval_metrics
from adaclip.models import AdaCLIP, VideoEmbedding
from adaclip.ops import k_schedule, symmetric_contrastive_loss, tau_schedule
from ray_jobs.common import config_from, emit, init_ray, job_parser, read_split
from ray_jobs.data import TALLY_NAME, ErrorTally, check_error_ratio, clips_dataset


class RetrievalStep(nn.Module):
    """The model's training forward in one call, so DDP sees (and syncs) every step."""

    def __init__(self, model: AdaCLIP):
        super().__init__()
        self.model = model

    def forward(self, tokens, clip_frames, selector_frames, k: int, tau: float):
        text = self.model.encode_text(tokens)  # (b, D)
        video = self.model.encode_video(clip_frames, selector_frames, k=k, tau=tau)
        # query scoring has no video vector: its frames are what the loss compares. The logit
        # scale is returned too: DDP requires every parameter to be used inside forward.
        scale = self.model.clip.logit_scale.exp()
        return text, video.video if video.video is not None else video.frames, scale


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All workers' rows in rank order; only this worker's rows carry gradients."""
    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    parts[dist.get_rank()] = x
    return torch.cat(parts)


def lr_lambda(total_steps: int, warmup: float):
    """Linear warm-up over `warmup` of the steps, then cosine decay to zero (SPEC section 5)."""
    warm = max(1, int(total_steps * warmup))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def train_epoch(
    step_module, model: AdaCLIP, optimizer, scheduler, shard, cfg: Config, epoch: int, batch: int
):
    """One pass over this worker's shard; returns the mean loss and samples seen."""
    device = ray.train.torch.get_device()
    k = k_schedule(epoch, cfg.model.num_frames, cfg.model.top_k, cfg.train.k_warmup_epochs)
    tau = tau_schedule(epoch, cfg.train.init_tau, cfg.train.tau_decay, cfg.train.min_tau)
    world = ray.train.get_context().get_world_size()
    amp = cfg.train.precision == "amp" and device.type == "cuda"
    step_module.train()
    losses, samples = [], 0
    for rows in shard.iter_torch_batches(batch_size=batch, drop_last=True, device=device):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            text, video, scale = step_module(
                rows["tokens"], rows["clip_frames"], rows["selector_frames"], k, tau
            )
            text, video = gather_with_grad(text), gather_with_grad(video)
            if video.dim() == 3:  # query scoring compares the (B, K, D) kept frames
                embedding = VideoEmbedding(video=None, frames=video, indices=None, logits=None)
            else:
                embedding = VideoEmbedding(video=video, frames=None, indices=None, logits=None)
            logits = scale.float() * model.similarity(text, embedding)
            # DDP averages gradients over workers and each worker's only cover its own rows:
            # scaling by the world size gives the gradient of the global-batch loss.
            loss = symmetric_contrastive_loss(logits.float()) * world
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        optimizer.step()
        scheduler.step()
        model.clamp_logit_scale()
        losses.append(loss.item() / world)
        samples += len(rows["tokens"]) * world
    return (sum(losses) / len(losses) if losses else float("nan")), samples, k, tau


def validate(
    model: AdaCLIP, shard, texts: list[str], caption_to_video: list[int], batch: int
) -> dict[str, Any]:
    """Text-to-video and video-to-text metrics on the validation stream."""
    model.eval()
    videos = embed_videos(model, shard.iter_batches(batch_size=batch, batch_format="numpy"))
    return retrieval_metrics(model, embed_texts(model, texts), caption_to_video, videos)


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
    optimizer = torch.optim.AdamW(
        model.param_groups(cfg.train.lr, cfg.train.coef_lr, cfg.train.weight_decay), betas=cfg.train.betas
    )
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
    step_module = ray.train.torch.prepare_model(
        RetrievalStep(model), parallel_strategy_kwargs={"find_unused_parameters": True}
    )
    per_worker = cfg.train.batch_size // world
    history: list[dict[str, Any]] = []
    for epoch in range(start_epoch, cfg.train.epochs):
        start = time.perf_counter()
        shard = ray.train.get_dataset_shard("train")
        loss, samples, k, tau = train_epoch(
            step_module, model, optimizer, scheduler, shard, cfg, epoch, per_worker
        )
        metrics: dict[str, Any] = {"epoch": epoch, "loss": loss, "k": k, "tau": tau, "samples": samples}
        metrics["samples_per_s"] = samples / (time.perf_counter() - start)
        tally = ray.get(ray.get_actor(loop["tally"]).summary.remote())
        metrics["decode_failed"] = tally["failed"]
        check_error_ratio(tally, cfg.data.max_error_ratio)
        if rank == 0:
            val = validate(
                model, ray.train.get_dataset_shard("val"), loop["val_texts"], loop["val_c2v"], per_worker
            )
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


def steps_per_epoch(records, cfg: Config) -> int:
    rows = sum(len(r.captions) for r in records) if cfg.data.caption_mode == "all" else len(records)
    return max(1, rows // cfg.train.batch_size)


def build_trainer(cfg: Config, tally_name: str) -> ray.train.torch.TorchTrainer:
    """A TorchTrainer over the config's train/val splits, resuming from `<output_dir>/last` if present."""
    train_records, val_records = read_split(cfg, cfg.data.train_split), read_split(cfg, cfg.data.val_split)
    texts, c2v = caption_table(val_records)
    output = Path(cfg.train.output_dir).resolve()
    last = output / "last"
    return ray.train.torch.TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config": cfg.model_dump(mode="json"),
            "steps_per_epoch": steps_per_epoch(train_records, cfg),
            "val_texts": texts,
            "val_c2v": c2v,
            "tally": tally_name,
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
        datasets={
            "train": clips_dataset(train_records, cfg, train=True, tally_name=tally_name),
            "val": clips_dataset(val_records, cfg, train=False, tally_name=tally_name),
        },
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
    )


def run_training(cfg: Config) -> dict[str, Any]:
    """Fit; checkpoints end up in `<output_dir>/last` and `<output_dir>/best`."""
    tally_name = f"{TALLY_NAME}-{uuid.uuid4().hex[:8]}"
    tally = ErrorTally.options(name=tally_name).remote()  # held here so it lives as long as the run
    ray.get(tally.summary.remote())
    try:
        result = build_trainer(cfg, tally_name).fit()
    except ray.train.TrainingFailedError as e:
        try:  # too many corrupt videos is the usual cause: raise that, not Ray's worker traceback
            check_error_ratio(ray.get(tally.summary.remote()), cfg.data.max_error_ratio)
        except DataError as data_error:
            raise data_error from e
        raise
    output = Path(cfg.train.output_dir).resolve()
    decode = ray.get(tally.summary.remote())
    check_error_ratio(decode, cfg.data.max_error_ratio)  # the workers may have checked a stale count
    return {
        "metrics": result.metrics or {},  # None when a resumed run had no epoch left
        "history": result.return_value or [],  # per-epoch metrics of this run (a resumed run starts late)
        "last": str(output / "last"),
        "best": str(output / "best"),
        "decode_failures": decode["failures"],
    }


def main(argv: list[str] | None = None) -> int:
    args = job_parser("adaclip train", __doc__.splitlines()[0]).parse_args(argv)
    cfg = config_from(args)
    init_ray()
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
