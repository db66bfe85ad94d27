"""Training on two nodes, shown: a head and a worker node (`ray start`, each with its own CPUs and a
custom resource naming it) on 127.0.0.1, the tiny training job submitted with `ray job submit`,
and the job's own report saying that its two Train workers ran on the two nodes and both read the
one decoded-frame store in `data.cache_dir` (on one machine any directory is shared by both nodes).
Then the worker node is stopped and the same job, resubmitted with one more epoch, continues from
`<output_dir>/last` on the node that is left.

Each node has NODE_CPUS CPUs and a Train worker asks for WORKER_CPUS, more than half a node, so
Ray Train (which packs workers by default) cannot place both on one node; a CPU of each node stays
free for Ray Data. The resubmission asks for 1 CPU per worker, so both fit on the remaining node.
About 3 to 4 minutes on 2 otherwise idle cores, most of it Ray start-up.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from pathlib import Path

import pytest
import torch
from clusterkit import RAY, ROOT, TINY, LocalCluster, last_json_result, wait_until

from ray_jobs.frame_store import MANIFEST

pytestmark = [pytest.mark.slow, pytest.mark.timeout(540)]

NODE_CPUS, WORKER_CPUS = 3, 2
BATCH = 8  # 2 workers x 4 rows of the 16 training videos


def submit(cluster: LocalCluster, job: list[str], timeout_s: float) -> dict:
    """`ray job submit` of `python <job>` (waits for the end); the job's --json report."""
    submission = f"adaclip-2n-{secrets.token_hex(4)}"
    argv = [RAY, "job", "submit", "--address", cluster.dashboard, "--submission-id", submission]
    done = subprocess.run(
        [*argv, "--", "python", *job],
        env=cluster.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]

    def job_cli(command: str) -> str:
        args = [RAY, "job", command, "--address", cluster.dashboard, submission]
        return subprocess.run(args, env=cluster.env, capture_output=True, text=True, timeout=60).stdout

    assert f"Job '{submission}' succeeded" in job_cli("status")
    return last_json_result(job_cli("logs"))  # the whole log: submit's tail may stop early


def test_two_train_workers_on_two_nodes_share_one_frame_store_then_resume_on_one(
    local_cluster: LocalCluster, synth_corpus: Path, tmp_path: Path
):
    cache, output = tmp_path / "cache", tmp_path / "run"
    job = ["-m", "ray_jobs.train", "--config", str(TINY), "--json"]
    job += [f"data.annotations={synth_corpus / 'annotations.jsonl'}", f"data.video_root={synth_corpus}"]
    job += [f"data.cache_dir={cache}", f"train.output_dir={output}", f"train.batch_size={BATCH}"]
    job += ["train.num_workers=2"]

    started = time.monotonic()
    phases: dict[str, float] = {}

    def phase(name: str) -> None:
        phases[name] = round(time.monotonic() - started - sum(phases.values()), 1)

    local_cluster.start_node("head_node", NODE_CPUS, head=True)
    local_cluster.start_node("worker_node", NODE_CPUS)
    nodes = local_cluster.wait_ready()
    assert len(set(nodes.values())) == 2, nodes
    phase("two nodes up")

    # ---- two workers, one per node, one store
    out = submit(local_cluster, [*job, "train.epochs=1", f"train.cpus_per_worker={WORKER_CPUS}"], 300)
    phase("job on two nodes")
    [epoch] = out["history"]
    assert epoch["epoch"] == 0
    workers = sorted(epoch["workers"], key=lambda w: w["rank"])
    assert [w["rank"] for w in workers] == [0, 1]
    assert {w["node_id"] for w in workers} == set(nodes.values())  # rank 0 and rank 1 on different nodes
    stores = {w["frame_store"] for w in workers}
    assert len(stores) == 1, workers  # both read the same store, and each saw its manifest from its node
    store = Path(stores.pop())
    assert store.is_relative_to(cache) and (store / MANIFEST).is_file()
    assert epoch["steps_per_worker"][0] == epoch["steps_per_worker"][1] > 0  # both trained, in step
    assert torch.load(output / "last" / "checkpoint.pt", weights_only=True)["epoch"] == 0

    # ---- the worker node goes; the job continues from <output_dir>/last on the head
    local_cluster.stop_node("worker_node")
    wait_until(
        lambda: set(local_cluster.node_ids_by_name()) == {"head_node"}, 60, "the worker node gone", 1.0
    )
    phase("worker node stopped")
    out = submit(local_cluster, [*job, "train.epochs=2", "train.cpus_per_worker=1"], 240)
    phase("resumed job on one node")
    print(f"phases (s): {phases}")
    assert [h["epoch"] for h in out["history"]] == [1]  # continued from epoch 1, not 0
    [epoch] = out["history"]
    assert {w["node_id"] for w in epoch["workers"]} == {nodes["head_node"]}
    assert {w["frame_store"] for w in epoch["workers"]} == {str(store)}  # the store was reused
    assert torch.load(output / "last" / "checkpoint.pt", weights_only=True)["epoch"] == 1
