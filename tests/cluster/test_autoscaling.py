"""Serve autoscaling, shown on 127.0.0.1: the ingress (`SearchAPI`: the text encoder, a client of
the index, a handle to the encoder and the shared media and stream folders) autoscales between 1
and 2 replicas with the autoscaling keys the RayService gives `VideoEncoder`, plus short delays so
the test is quick. A bounded burst of concurrent searches scales it up; once the burst ends it
scales back down. Both are read from Serve's own status (`serve.status()`: the deployment's
replica states), polled with deadlines.

Several ingress replicas need a Qdrant server (an embedded Edge index has one owner), and none can
run here: the index is qdrant-client's local mode (`index.url=":memory:"`), a separate in-memory
store per replica. That shows Serve's scaling of the ingress, not a shared index.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml
from clusterkit import ROOT, TINY, free_port, wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    # deprecated in favour of two environment variables, which would have to be set before the
    # session's Ray starts; the field still sets both push intervals (router and replica)
    pytest.mark.filterwarnings("ignore:The `metrics_interval_s` field:DeprecationWarning"),
]

APP = "adaclip-autoscale"
DEPLOYMENT = "SearchAPI"
AUTOSCALING = {
    "min_replicas": 1,
    "max_replicas": 2,
    "target_ongoing_requests": 1,
    # short delays and windows so the test is quick (defaults: 30 s up, 600 s down, 30 s window)
    "upscale_delay_s": 1.0,
    "downscale_delay_s": 3.0,
    "metrics_interval_s": 0.5,
    "look_back_period_s": 2.0,
}
CLIENTS = 4  # concurrent searchers of the burst (more only slow the new replica's start on 2 cores)
BURST_S = 60.0  # the burst ends as soon as the second replica runs, at the latest after this
SCALE_DOWN_S = 60.0


def rayservice_encoder_autoscaling() -> dict:
    """The autoscaling_config the RayService (cluster/kuberay/rayservice.yaml) gives VideoEncoder."""
    docs = yaml.safe_load_all((ROOT / "cluster" / "kuberay" / "rayservice.yaml").read_text())
    service = next(d for d in docs if d and d.get("kind") == "RayService")
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    deployments = config["applications"][0]["deployments"]
    return next(d for d in deployments if d["name"] == "VideoEncoder")["autoscaling_config"]


def replica_states() -> dict[str, int]:
    """RUNNING / STARTING / STOPPING ... -> count of the deployment's replicas, from serve.status()."""
    from ray import serve

    app = serve.status().applications.get(APP)
    if app is None or DEPLOYMENT not in app.deployments:
        return {}
    return {str(getattr(s, "value", s)): n for s, n in app.deployments[DEPLOYMENT].replica_states.items()}


def running(states: dict[str, int]) -> int:
    return states.get("RUNNING", 0)


@pytest.fixture
def served(ray_local, tmp_path: Path):
    """The app on a free port with SearchAPI autoscaling; deleted and Serve shut down at the end."""
    from processes import one_encoder
    from ray import serve

    from serve.app import build_application
    from serve.schemas import AppArgs

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = AppArgs.model_validate(
        {
            "config": str(TINY),
            "overrides": ["index.backend=server", 'index.url=":memory:"'],
            "staging_dir": str(tmp_path / "staging"),
            "media_dir": str(tmp_path / "media"),
            "streams_dir": str(tmp_path / "streams"),
        }
    )
    deployments = {  # two ingress replicas and one encoder: 0.9 of 2 CPUs
        DEPLOYMENT: {"autoscaling_config": AUTOSCALING, "ray_actor_options": {"num_cpus": 0.3}},
        **one_encoder(0.3),
    }
    try:
        serve.run(
            build_application(args, deployments),
            name=APP,
            route_prefix="/",
        )
        url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            try:
                return httpx.get(f"{url}/healthz", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, 120, f"{url}/healthz 200")
        yield url
    finally:
        serve.delete(APP)
        serve.shutdown()


def test_the_ingress_scales_up_under_a_burst_and_back_down_after_it(served):
    assert set(AUTOSCALING) >= set(rayservice_encoder_autoscaling())  # the RayService's keys, and more
    started = time.monotonic()
    states = wait_until(lambda: (s := replica_states()) and running(s) == 1 and s, 60, "one SearchAPI")
    assert states == {"RUNNING": 1}, states  # min_replicas: one replica before any load

    stop = threading.Event()
    codes: Counter[int] = Counter()
    lock = threading.Lock()

    def searcher(i: int) -> None:
        with httpx.Client(timeout=60) as client:
            while not stop.is_set():
                r = client.get(f"{served}/search", params={"q": f"a red circle {i}", "k": 5, "mode": "fast"})
                with lock:
                    codes[r.status_code] += 1

    seen_up: dict[str, int] = {}
    asked: list[float] = []  # seconds into the burst when the second replica was first listed
    burst = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(searcher, i) for i in range(CLIENTS)]
        try:

            def scaled_up() -> bool:
                nonlocal seen_up
                for f in futures:
                    if f.done():
                        f.result()  # a searcher failed: raise its error now
                seen_up = replica_states()
                if sum(seen_up.values()) > 1 and not asked:
                    asked.append(time.monotonic() - burst)
                return running(seen_up) == 2

            wait_until(scaled_up, BURST_S, f"a second {DEPLOYMENT} replica during the burst", interval_s=0.5)
        finally:
            stop.set()
        for f in futures:
            f.result()
    up_s = time.monotonic() - burst
    assert running(seen_up) == 2, seen_up
    assert sum(codes.values()) > 0 and set(codes) == {200}, codes  # every search of the burst answered

    def scaled_down() -> dict[str, int] | None:
        states = replica_states()
        return states if states == {"RUNNING": 1} else None

    down = wait_until(scaled_down, SCALE_DOWN_S, f"{DEPLOYMENT} back at one replica after the burst", 0.5)
    assert down == {"RUNNING": 1}
    r = httpx.get(f"{served}/search", params={"q": "a blue square", "k": 3}, timeout=60)
    assert r.status_code == 200, r.text  # the remaining replica still answers
    print(
        f"burst: second replica listed after {asked[0] if asked else float('nan'):.1f} s, running after "
        f"{up_s:.1f} s ({sum(codes.values())} searches); back to one {time.monotonic() - burst - up_s:.1f} s "
        f"later; {time.monotonic() - started:.1f} s in all"
    )
