"""The Ray training and evaluation jobs end to end on the tiny config and the synthetic corpus.

Two CPU workers (gloo) train with the loss falling while a corrupt video is skipped and counted;
a job past the decode-error ratio fails with a DataError; checkpoints and zero-shot models are
evaluated; and on a cluster the test starts with `ray start --head` on 127.0.0.1, a training
driver killed after its first checkpoint is re-run with `ray job submit` and resumes.
Most of the time is Ray start-up and Ray Data's per-epoch start (seconds per epoch whatever the
corpus size): about 6 minutes on 2 otherwise idle CPU cores, much longer when they are shared.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from processes import free_port, http_answers

from adaclip.config import load_config
from adaclip.data.annotations import read_annotations
from adaclip.errors import ConfigError, DataError

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
RAY = str(Path(sys.executable).with_name("ray"))  # the CLI of the environment running the tests
EPOCHS, BATCH = 3, 8  # 2 workers x 4 rows; caption_mode=all gives several steps per epoch
RESULT_KEYS = {"t2v", "v2t", "captions", "videos", "skipped_captions", "split", "aggregation", "selection"}
RESULT_KEYS |= {"num_frames", "frames_kept", "gflops_per_video", "model_version"}
METRIC_KEYS = {"R1", "R5", "R10", "R50", "MedR", "MeanR"}


def data_overrides(corpus: Path, work: Path) -> list[str]:
    return [
        f"data.annotations={corpus / 'annotations.jsonl'}",
        f"data.video_root={corpus}",
        f"data.cache_dir={work / 'cache'}",
        f"train.output_dir={work / 'run'}",
    ]


def wait_for(condition: Callable[[], bool], deadline_s: float, what: str, proc: subprocess.Popen) -> None:
    """Poll `condition` until it holds, pausing on the process that should bring it about (no sleeps)."""
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline_s:.0f} s waiting for {what}")
        try:
            proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            continue
        if not condition():
            raise AssertionError(f"the process exited with {proc.returncode} before {what}")


def load_checkpoint(folder: str | Path) -> dict:
    return torch.load(Path(folder) / "checkpoint.pt", map_location="cpu", weights_only=True)


# ---------------------------------------------------------------- training with a corrupt video


@pytest.fixture(scope="module")
def corrupt_corpus(synth_corpus, tmp_path_factory) -> tuple[Path, Path]:
    """A copy of the session corpus with one training video overwritten by garbage."""
    corpus = tmp_path_factory.mktemp("corrupt") / "corpus"
    shutil.copytree(synth_corpus, corpus)
    cfg = load_config(TINY, [f"data.annotations={corpus / 'annotations.jsonl'}", f"data.video_root={corpus}"])
    bad = read_annotations(cfg.data, "train")[0].path
    bad.write_bytes(b"this is not a video\n" * 200)
    return corpus, bad


@pytest.fixture(scope="module")
def trained(ray_local, corrupt_corpus, tmp_path_factory) -> tuple[object, dict]:
    """Two workers, EPOCHS epochs, mean aggregation, on the corpus with one corrupt video."""
    from ray_jobs.train import run_training

    corpus, _ = corrupt_corpus
    work = tmp_path_factory.mktemp("trained")
    cfg = load_config(
        TINY,
        [
            *data_overrides(corpus, work),
            f"train.epochs={EPOCHS}",
            f"train.batch_size={BATCH}",
            "data.caption_mode=all",
            "model.aggregation=mean",
            "data.max_error_ratio=0.25",
        ],
    )
    return cfg, run_training(cfg)


def test_two_workers_train_with_falling_loss_skipping_the_corrupt_video(trained, corrupt_corpus):
    _, out = trained
    _, bad = corrupt_corpus
    history = out["history"]
    assert [h["epoch"] for h in history] == list(range(EPOCHS))
    # 15 good training videos x 3 captions = 45 rows, split equally over 2 workers (22 each) and
    # read in full batches of 4 per worker: 5 steps, 40 samples per epoch over both workers.
    assert all(h["samples"] == 40 for h in history), [h["samples"] for h in history]
    assert all(h["steps_per_worker"] == [5, 5] for h in history)  # DDP workers stay in step
    losses = [h["loss"] for h in history]
    assert losses[-1] < losses[0] - 0.02, losses
    assert all(0 <= h["val_t2v_R1"] <= 100 for h in history)
    assert out["decode_failures"].keys() == {str(bad)} and out["decode_failures"][str(bad)]
    assert all(h["decode_failed"] == 1 for h in history)

    last = load_checkpoint(out["last"])
    assert last["epoch"] == EPOCHS - 1 and last["config"]["model"]["aggregation"] == "mean"
    assert isinstance(last["model_version"], str) and last["model_version"]
    assert last["best_r1"] == max(h["val_t2v_R1"] for h in history)
    best = load_checkpoint(out["best"])
    assert best["metrics"]["val_t2v_R1"] == last["best_r1"]
    assert set(best["model"]) == set(last["model"])


def test_a_job_past_the_error_ratio_fails_with_a_data_error(ray_local, corrupt_corpus, tmp_path):
    from ray_jobs.train import run_training

    corpus, bad = corrupt_corpus
    cfg = load_config(TINY, [*data_overrides(corpus, tmp_path), "train.epochs=1", "data.max_error_ratio=0"])
    with pytest.raises(DataError) as e:
        run_training(cfg)
    message = str(e.value)
    assert "failed to decode" in message and "data.max_error_ratio=0.0%" in message
    assert str(bad) in message


def test_a_stream_without_a_store_counts_failures_in_the_trainer(ray_local, corrupt_corpus, tmp_path):
    from ray_jobs.train import run_training

    corpus, _ = corrupt_corpus
    overrides = [*data_overrides(corpus, tmp_path), "data.cache_dir=null", "train.epochs=1"]
    with pytest.raises(DataError) as e:  # every epoch decodes; the workers count the failed row
        run_training(load_config(TINY, [*overrides, "data.max_error_ratio=0"]))
    assert "1 of 16 videos failed to decode" in str(e.value)


# ---------------------------------------------------------------- evaluation


def test_evaluate_the_trained_checkpoint_from_the_command_line(trained, capsys):
    from ray_jobs.evaluate import main

    _, out = trained
    assert main(["--checkpoint", out["best"], "--split", "test", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (
        set(result) >= RESULT_KEYS and set(result["t2v"]) >= METRIC_KEYS and set(result["v2t"]) >= METRIC_KEYS
    )
    assert (result["videos"], result["captions"]) == (4, 12)  # 24 videos: 4 in test, 3 captions each
    assert (result["selection"], result["aggregation"], result["split"]) == ("learned", "mean", "test")
    assert (result["num_frames"], result["frames_kept"]) == (16, 4)
    assert result["gflops_per_video"] > 0
    assert result["model_version"] == load_checkpoint(out["best"])["model_version"]
    assert 0 <= result["t2v"]["R1"] <= result["t2v"]["R5"] <= 100


def test_evaluate_zero_shot_models_with_each_aggregation(ray_local, trained, tiny_overrides):
    from ray_jobs.evaluate import evaluate, load_for_eval

    _, out = trained
    learned, _ = load_for_eval(out["best"], None, [])
    results = {}
    for aggregation in ("mean", "qscore"):
        overrides = [*tiny_overrides, "model.selection=all", f"model.aggregation={aggregation}"]
        model, cfg = load_for_eval(None, str(TINY), overrides)
        assert cfg.model.clip.pretrained is None  # the tiny CLIP at random initialisation
        results[aggregation] = evaluate(model, cfg, "test")
    for aggregation, r in results.items():
        assert set(r) >= RESULT_KEYS and set(r["t2v"]) >= METRIC_KEYS
        assert (r["selection"], r["aggregation"]) == ("all", aggregation)
        assert (r["num_frames"], r["frames_kept"]) == (16, 16)
        assert r["videos"] == 4 and r["captions"] == 12
    # all 16 frames through the image encoder cost more than the checkpoint's 4 selected ones
    from adaclip.models.flops import gflops_per_video

    assert results["mean"]["gflops_per_video"] > gflops_per_video(learned)["total"] > 0


def test_paragraph_evaluation_tokenised_to_the_configs_length(ray_local, tiny_overrides):
    """caption_mode=concat scores one paragraph per video (AdaCLIP's DiDeMo / ActivityNet protocol),
    tokenised to data.max_text_tokens like training; checked against a computation written here."""
    import numpy as np
    import open_clip

    from adaclip.encoding import decode_for_model, encode_decoded
    from ray_jobs.common import read_split
    from ray_jobs.evaluate import evaluate, load_for_eval

    overrides = ["model.selection=all", "model.aggregation=mean", "data.caption_mode=concat"]
    model, cfg = load_for_eval(None, str(TINY), [*tiny_overrides, *overrides, "data.max_text_tokens=8"])
    result = evaluate(model, cfg, "test")
    assert result["captions"] == result["videos"] == 4

    records = read_split(cfg, "test")
    paragraphs = [" ".join(r.captions) for r in records]
    tokens = open_clip.tokenizer.tokenize(paragraphs, context_length=8)  # truncated, end token kept
    assert (tokens[:, -1] != 0).all()  # every paragraph is longer than 8 tokens: the length matters
    with torch.no_grad():
        text = model.encode_text(tokens).double()
    text = text / text.norm(dim=1, keepdim=True)
    videos = np.stack(
        [e.video for e in encode_decoded(model, [decode_for_model(r.path, cfg) for r in records])]
    )
    sims = text @ torch.from_numpy(videos).double().T  # (4 paragraphs, 4 videos)
    ranks = torch.tensor([(sims[i] > sims[i, i]).sum().item() for i in range(4)], dtype=torch.float64)
    assert result["t2v"]["R1"] == pytest.approx(100 * (ranks < 1).double().mean().item())
    assert result["t2v"]["MeanR"] == pytest.approx((ranks + 1).mean().item())


def test_evaluating_with_an_aggregation_the_checkpoint_lacks_is_a_config_error(trained):
    from ray_jobs.evaluate import load_for_eval

    _, out = trained
    with pytest.raises(ConfigError, match="aggregation=mlp"):
        load_for_eval(out["best"], None, ["model.aggregation=mlp"])
    model, cfg = load_for_eval(
        out["best"], None, ["model.aggregation=qscore", "model.qscore_temperature=0.05"]
    )
    assert (cfg.model.aggregation, cfg.model.qscore_temperature) == ("qscore", 0.05)  # weight-free: fine


# ---------------------------------------------------------------- a cluster: kill, resume, ray job submit


@contextlib.contextmanager
def local_cluster(log_path: Path) -> Iterator[dict[str, str]]:
    """`ray start --head --block` on 127.0.0.1 with the dashboard (job server); yields addresses and env.

    Stopped by signalling the `ray start --block` process started here, which shuts down its own GCS,
    raylet and dashboard: `ray stop` would kill every Ray process on the machine, the session's
    `ray_local` included. Every port is picked free, since the defaults (dashboard agent 52365,
    client server 10001) clash with any other Ray on the host and the job server then answers
    "No available agent to submit job". Token authentication stays on, with a token of our own.
    """
    temp_dir = tempfile.mkdtemp(prefix="rayt-", dir="/tmp")  # short: Ray's socket paths are capped
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # cluster's python
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",  # no Serve to drain: stop at once, not after 30 s
    }
    env.pop("RAY_ADDRESS", None)
    ports = {
        "--port": free_port(),
        "--dashboard-port": free_port(),
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--runtime-env-agent-port": free_port(),
        "--metrics-export-port": free_port(),
        "--ray-client-server-port": free_port(),
    }
    start = [RAY, "start", "--head", "--block", "--num-cpus=2", "--node-ip-address=127.0.0.1"]
    start += ["--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--temp-dir={temp_dir}"]
    start += ["--disable-usage-stats", *(f"{flag}={port}" for flag, port in ports.items())]
    dashboard = f"http://127.0.0.1:{ports['--dashboard-port']}"
    with log_path.open("w") as log:
        head = subprocess.Popen(
            start, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        try:
            wait_for(lambda: http_answers(f"{dashboard}/api/version"), 180, "the dashboard", head)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{log_path.read_text()[-3000:]}") from e
        yield {"gcs": f"127.0.0.1:{ports['--port']}", "dashboard": dashboard, **env}
    finally:
        head.send_signal(signal.SIGTERM)  # drains, then stops only this cluster's processes
        try:
            head.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)
        shutil.rmtree(temp_dir, ignore_errors=True)


def last_json_result(log: str) -> dict:
    """The job's --json object: Ray's progress bars may share its line in the streamed log."""
    start = log.rfind('{"metrics"')
    assert start >= 0, log[-3000:]
    return json.JSONDecoder().raw_decode(log, start)[0]


def kill_after_first_checkpoint(argv: list[str], env: dict[str, str], last: Path, log_path: Path) -> None:
    """Run a training driver until `last` holds a checkpoint, then SIGKILL its process group."""

    def checkpointed() -> bool:
        try:
            return last.exists() and load_checkpoint(last.parent)["epoch"] >= 0
        except (RuntimeError, OSError, EOFError):  # mid-replace: try again
            return False

    with log_path.open("w") as log:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_for(checkpointed, 300, "the first checkpoint", proc)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{log_path.read_text()[-3000:]}") from e
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the job finished before it could be killed"


def test_a_killed_job_resumes_through_ray_job_submit_on_a_local_cluster(synth_corpus, tmp_path):
    """A driver on the cluster (RAY_ADDRESS) is killed after epoch 0; `ray job submit` re-runs the
    same command, which continues from epoch 1, and the job ends SUCCEEDED."""
    job = ["-m", "ray_jobs.train", "--config", str(TINY), *data_overrides(synth_corpus, tmp_path)]
    job += ["train.epochs=2", f"train.batch_size={BATCH}", "--json"]
    last = tmp_path / "run" / "last" / "checkpoint.pt"
    with local_cluster(tmp_path / "ray_start.log") as cluster:
        env = {key: value for key, value in cluster.items() if key not in ("gcs", "dashboard")}
        driver_env = {**env, "RAY_ADDRESS": cluster["gcs"]}
        kill_after_first_checkpoint([sys.executable, *job], driver_env, last, tmp_path / "killed.log")
        assert load_checkpoint(last.parent)["epoch"] == 0

        submission = f"adaclip-test-{secrets.token_hex(4)}"
        submit = [RAY, "job", "submit", "--address", cluster["dashboard"], "--submission-id", submission]
        done = subprocess.run(
            [*submit, "--", "python", *job], env=env, cwd=ROOT, capture_output=True, text=True, timeout=500
        )
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]

        def job_cli(command: str) -> str:
            args = [RAY, "job", command, "--address", cluster["dashboard"], submission]
            return subprocess.run(args, env=env, capture_output=True, text=True, timeout=60).stdout

        status, logs = job_cli("status"), job_cli("logs")  # the whole log: submit's tail may stop early
    assert f"Job '{submission}' succeeded" in status  # status SUCCEEDED
    out = last_json_result(logs)
    assert [h["epoch"] for h in out["history"]] == [1]  # continued from epoch 1, not 0
    state = load_checkpoint(last.parent)
    assert state["epoch"] == 1 and {"model", "optimizer", "scheduler", "config"} <= set(state)
