"""`adaclip ingest` killed with SIGKILL (every process it started) after some videos are indexed,
then run again: the second run resumes, and every decodable video is in the index exactly once.

Progress comes from the command's own progress bar, which it draws only on a terminal: stderr is a
pseudo-terminal here. The bar counts files done: a video once its upsert returned (an upsert is
durable when it returns), a file that failed to decode at once. So what it shows at the kill, less
the undecodable files, is a lower bound of what must survive the kill.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import random
import re
import shutil
import struct
import subprocess
import termios
import threading
from pathlib import Path

import pytest
from faultkit import TINY, adaclip_command, all_point_ids, expected_ids, open_served_index, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

FIRST_RUN_S = 240.0  # start to the kill point: Ray, the model and the first batches
SECOND_RUN_S = 240.0
PROGRESS = re.compile(rb"ingest:\s*\d+%.*?\|\s*(\d+)/(\d+)")


class Progress:
    """Reads a pseudo-terminal in a thread and keeps the highest `done/total` the bar showed."""

    def __init__(self, master: int):
        self.master, self.done, self.total, self.text = master, 0, 0, bytearray()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: every writer of the terminal is gone
                return
            if not chunk:
                return
            self.text += chunk
            for done, total in PROGRESS.findall(bytes(self.text[-4096:])):
                self.done, self.total = max(self.done, int(done)), int(total)


def test_ingest_killed_midway_then_rerun_indexes_every_video_once(launcher, fault_corpus, tmp_path):
    library = tmp_path / "library"
    library.mkdir()
    videos = sorted(fault_corpus.glob("*.mp4"))
    for v in videos:
        shutil.copy(v, library / v.name)
    broken = [library / "notes.mp4"]  # not decodable: reported as failed, never indexed
    broken[0].write_text("not a video\n" * 40)
    index_path = tmp_path / "index"
    # one video per encoder call and per upsert: the index grows video by video (a window to kill in)
    argv = [*adaclip_command(), "ingest", str(library), "--config", str(TINY), f"index.path={index_path}"]
    argv += ["--batch-size", "1", "--upsert-batch", "1"]
    rng = random.Random()
    kill_after = rng.randint(len(broken) + 1, len(videos) // 4)  # files done before the kill
    print(f"kill after {kill_after} files")  # shown on failure, to replay a kill point

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 200, 0, 0))  # the bar needs a width
    try:
        first = launcher.popen(argv, stdout=subprocess.PIPE, stderr=slave)
    finally:
        os.close(slave)
    progress = Progress(master)
    try:
        wait_until(
            lambda: progress.done >= kill_after or first.poll() is not None,
            FIRST_RUN_S,
            f"{kill_after} files done by the first run",
        )
        launcher.kill(first)  # kill -9 of the command and of every Ray process it started
    finally:
        first.wait(timeout=30)
        progress.thread.join(timeout=10)
        os.close(master)
    seen = progress.done
    summary = first.stdout.read().decode()
    assert first.returncode == -9 and not summary, (
        f"the first run ended before the kill (status {first.returncode}): {summary}\n"
        f"{progress.text[-3000:].decode(errors='replace')}"
    )
    assert seen < len(videos), "the first run had indexed everything before the kill"
    launcher.assert_gone(first, 10, "after kill -9 of the first run")

    second = launcher.popen([*argv, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = second.communicate(timeout=SECOND_RUN_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the second run took over {SECOND_RUN_S:g} s") from None
    assert second.returncode == 0, err.decode(errors="replace")[-3000:]
    result = json.loads(out)
    print(f"killed after {seen} files; the rerun skipped {result['skipped']}, ingested {result['ingested']}")
    survivors = seen - len(broken)  # at least this many were indexed when the kill was sent
    assert result["skipped"] >= survivors, f"videos indexed before the kill were lost ({seen=}): {result}"
    assert result["skipped"] + result["ingested"] == len(videos), result
    assert {Path(p).name for p in result["failures"]} == {p.name for p in broken}, result
    assert result["count"] == len(videos), result
    launcher.assert_gone(second, 20, "after the second run exited")

    expected = expected_ids([library / v.name for v in videos])
    with open_served_index(index_path) as index:
        ids = all_point_ids(index)
        assert index.count() == len(videos)
    assert len(ids) == len(set(ids)) == len(videos), "a video is indexed twice"
    assert set(ids) == set(expected), "the index holds other videos than the decodable ones"
