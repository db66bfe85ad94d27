"""kill -9 of `adaclip serve` and every process it started, at a random moment of a stream of
uploads, then a restart on the same directories: nothing acknowledged is lost, and index and media
agree.

Invariants checked after the restart:
- every upload answered 201/200 before the kill is there: GET /videos/{id} is 200 and
  GET /videos/{id}/media returns the uploaded bytes;
- no point without its stored file and no stored file (`<id><suffix>` in the media dir) without its
  point (ids listed from the index itself once the app is stopped);
- no staging file (`upload-*.part`) survives the restart.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from faultkit import ServeApp, all_point_ids, expected_ids, open_served_index, wait_until

from adaclip.index.base import canonical_id
from serve.upload import STAGED_PREFIX, STAGED_SUFFIX

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

UPLOADS = 12  # distinct videos, two uploads at a time
UPLOADERS = 2
ACK_S = 180.0  # start of the stream -> the acknowledgements the kill waits for


class UploadStream:
    """Uploads `paths` one after another from UPLOADERS threads until done or stopped; records
    every acknowledged id (201 new, 200 known) and every upload that got no answer."""

    def __init__(self, url: str, paths: list[Path]):
        self.url, self.todo = url, list(paths)
        self.lock, self.stopped = threading.Lock(), threading.Event()
        self.acked: dict[str, Path] = {}
        self.unanswered: list[Path] = []
        self.refused: dict[Path, int] = {}
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(UPLOADERS)]
        for t in self.threads:
            t.start()

    def _next(self) -> Path | None:
        with self.lock:
            return None if self.stopped.is_set() or not self.todo else self.todo.pop(0)

    def _run(self) -> None:
        while (path := self._next()) is not None:
            try:
                with open(path, "rb") as f:
                    r = httpx.post(
                        f"{self.url}/videos", files={"file": (path.name, f, "video/mp4")}, timeout=120
                    )
            except httpx.HTTPError:
                with self.lock:
                    self.unanswered.append(path)
                continue
            with self.lock:
                if r.status_code in (200, 201):
                    self.acked[r.json()["id"]] = path
                else:
                    self.refused[path] = r.status_code

    def stop(self) -> None:
        self.stopped.set()
        for t in self.threads:
            t.join(150)
            assert not t.is_alive(), "an upload thread hangs"


def stored_media(media_dir: Path) -> dict[str, Path]:
    """Served files of the media dir by id (`<uuid><suffix>`; `.pending/` is not served)."""
    return {p.stem: p for p in media_dir.iterdir() if p.is_file() and canonical_id(p.stem) == p.stem}


def test_kill_9_during_uploads_loses_nothing_acknowledged(launcher, fault_corpus, tmp_path):
    app = ServeApp(launcher, tmp_path)
    app.start()
    app.wait_ready()

    videos = sorted(fault_corpus.glob("*.mp4"))[:UPLOADS]
    rng = random.Random()
    # an upload takes ~0.2-1 s here: the kill lands inside one of the next uploads, at any stage
    kill_after, delay_s = rng.randint(1, UPLOADS - 4), rng.uniform(0.0, 0.25)
    print(f"kill -9 {delay_s:.2f} s after acknowledgement #{kill_after}")  # to replay a failure

    stream = UploadStream(app.url, videos)
    wait_until(lambda: len(stream.acked) >= kill_after, ACK_S, f"{kill_after} uploads acknowledged")
    threading.Event().wait(delay_s)  # the random kill moment within the next uploads (not a sync wait)
    app.kill_all()
    stream.stop()
    acked = dict(stream.acked)  # every answer got before the kill: the server sent it before dying
    print(f"acknowledged {len(acked)}, unanswered {len(stream.unanswered)}, refused {stream.refused}")
    assert not stream.refused, f"uploads refused before the kill: {stream.refused}"
    assert len(acked) < UPLOADS, "every upload was answered before the kill: nothing was in flight"
    app.assert_gone(10, "after kill -9")

    app.start()  # same index, staging and media directories
    app.wait_ready()
    assert not list(app.staging_dir.glob(f"{STAGED_PREFIX}*{STAGED_SUFFIX}")), "staging files survive"
    for vid, path in acked.items():
        r = httpx.get(f"{app.url}/videos/{vid}", timeout=30)
        assert r.status_code == 200, f"acknowledged upload {path.name} ({vid}) is gone: {r.text}"
        media = httpx.get(f"{app.url}/videos/{vid}/media", timeout=30)
        assert media.status_code == 200, (
            f"acknowledged upload {path.name} ({vid}) lost its file: {media.text}"
        )
        assert media.content == path.read_bytes(), f"the stored file of {path.name} differs"
    stats = httpx.get(f"{app.url}/stats", timeout=30)
    assert stats.status_code == 200, stats.text

    app.proc.send_signal(signal.SIGTERM)  # stop cleanly to read the index directly
    signalled = time.monotonic()
    assert app.wait_exit(120) == 0, app.output()
    print(f"stopped {time.monotonic() - signalled:.1f} s after SIGTERM")
    with open_served_index(app.index_path) as index:
        ids = all_point_ids(index)
    points, files = set(ids), stored_media(app.media_dir)
    assert len(ids) == len(points) == stats.json()["count"]
    assert set(acked) <= points
    assert points <= set(expected_ids(videos)), "points of videos never uploaded"
    assert not points - files.keys(), f"points without a stored file: {sorted(points - files.keys())}"
    assert not files.keys() - points, f"stored files without a point: {sorted(files.keys() - points)}"
