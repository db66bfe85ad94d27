"""Live streams: how long after a window is complete it is searchable, and how long a segment's
acknowledgement takes, with segments pushed at `--pace` times real time to the real app.

    python -m benchmarks.stream_bench --out out/bench/stream.json

A synthetic recording (a moving square over a changing background) is cut into `--segment-s`
MPEG-TS segments (adaclip.data.segments) and pushed in order to POST /streams/{id}/segments; the
app indexes each 60 s window (`index.window_seconds`) once the next one starts. The delay of a
window is from the acknowledgement of the segment that completed it (or of the end) to the moment
it was searchable, as the app records it (GET /streams/{id}); a search for the stream's windows
confirms they are there. Tiny model, CPU, this machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from adaclip.data.segments import write_ts_segments
from benchmarks.serve_bench import percentiles, running_app

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.stream_bench", description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "tiny.yaml"))
    p.add_argument("--windows", type=int, default=5, help="60 s windows in the recording")
    p.add_argument("--segment-s", type=int, default=6)
    p.add_argument("--fps", type=int, default=4)
    p.add_argument("--pace", type=float, default=4.0, help="times real time the segments are pushed at")
    p.add_argument("--out", type=Path, default=Path("out/bench/stream.json"))
    return p.parse_args(argv)


def pictures(num: int, width: int = 160, height: int = 96) -> Iterator[np.ndarray]:
    for i in range(num):
        frame = np.full((height, width, 3), (i * 7) % 200 + 30, np.uint8)
        x = (i * 5) % (width - 16)
        frame[40:56, x : x + 16] = (230, 20, 20)
        yield frame


def run(args: argparse.Namespace) -> dict:
    import httpx

    seg_frames = args.segment_s * args.fps
    num_segments = args.windows * 60 // args.segment_s
    with tempfile.TemporaryDirectory(prefix="stream-bench-") as tmp:
        work = Path(tmp)
        segments = write_ts_segments(
            work / "segments", pictures(num_segments * seg_frames), num_segments, seg_frames, args.fps
        )
        with (
            running_app(args.config, ["index.window_seconds=60"], work / "index") as url,
            httpx.Client(base_url=url, timeout=120) as client,
        ):
            sid = client.post("/streams", json={"title": "bench stream"}).json()["id"]
            acks, started = [], time.monotonic()
            for i, path in enumerate(segments):
                due = started + i * args.segment_s / args.pace  # real-time pace, sped up
                time.sleep(max(0.0, due - time.monotonic()))  # pacing the producer, not a wait for the app
                t0 = time.perf_counter()
                r = client.post(
                    f"/streams/{sid}/segments",
                    params={"start": i * args.segment_s},
                    files={"file": (path.name, path.read_bytes(), "video/mp2t")},
                )
                acks.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 201, r.text
            info = client.post(f"/streams/{sid}/end").json()
            found = client.get(
                "/search", params={"q": "a red square", "source": "bench stream", "group": "false", "k": 100}
            ).json()["results"]
    delays = [w["delay_s"] * 1000 for w in info["indexed"]]
    return {
        "windows": len(info["indexed"]),
        "segments": num_segments,
        "segment_s": args.segment_s,
        "pace": args.pace,
        "window_delay": percentiles(delays) | {"max_ms": round(max(delays), 3)},
        "segment_ack": percentiles(acks),
        "searchable_windows": len(found),
    }


def table(r: dict) -> str:
    d, a = r["window_delay"], r["segment_ack"]
    return "\n".join(
        [
            f"live stream: {r['segments']} segments of {r['segment_s']} s at {r['pace']:g}x real time, "
            f"{r['windows']} windows of 60 s ({r['searchable_windows']} found by search)",
            "| figure | p50 | p99 | max |",
            "|---|---|---|---|",
            f"| window complete -> searchable | {d['p50_ms']:.0f} ms | {d['p99_ms']:.0f} ms | {d['max_ms']:.0f} ms |",
            f"| segment POST -> acknowledged | {a['p50_ms']:.0f} ms | {a['p99_ms']:.0f} ms | |",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
