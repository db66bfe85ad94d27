"""Live-stream state on disk (no Ray): the order rules, durability across a restart, a crashed
append cut off, and windows cut from segments."""

from __future__ import annotations

import hashlib

import pytest

from serve.streams import MEDIA, START_TOLERANCE_S, StreamError, StreamStore


def segment(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_segments_must_follow_each_other_and_retries_are_idempotent(tmp_path):
    store = StreamStore(tmp_path / "streams")
    stream = store.create("cam 1", {"site": "north"})
    for i in range(3):
        path, sha = segment(tmp_path, f"s{i}", bytes([i]) * 100)
        stream, retry = store.append(stream.id, path, start=4.0 * i, duration=4.0, sha256=sha)
        assert retry is False
    assert stream.duration == 12.0 and [s.offset for s in stream.segments] == [0, 100, 200]
    path, sha = segment(tmp_path, "again", bytes([1]) * 100)
    assert store.append(stream.id, path, 4.0 + START_TOLERANCE_S / 2, 4.0, sha)[1] is True  # a retry
    refused = {
        "gap": (16.0, b"x"),
        "overlap": (10.0, b"x"),
        "other bytes at a stored start": (4.0, b"y" * 100),
    }
    for name, (start, data) in refused.items():
        path, sha = segment(tmp_path, "bad", data)
        with pytest.raises(StreamError) as e:
            store.append(stream.id, path, start, 4.0, sha)
        assert e.value.status == 409, name
        assert name != "gap" or "must start at 12 s" in e.value.message
    assert (tmp_path / "streams" / stream.id / MEDIA).stat().st_size == 300  # nothing refused was kept
    store.end(stream.id)
    path, sha = segment(tmp_path, "late", b"z")
    with pytest.raises(StreamError, match="ended"):
        store.append(stream.id, path, 12.0, 4.0, sha)
    with pytest.raises(StreamError) as e:
        store.get("00000000-0000-0000-0000-000000000000")
    assert e.value.status == 404


def test_a_restart_keeps_every_acknowledged_segment_and_cuts_a_crashed_append(tmp_path):
    store = StreamStore(tmp_path / "streams")
    stream = store.create(None, None)
    path, sha = segment(tmp_path, "s0", b"a" * 50)
    store.append(stream.id, path, 0.0, 2.0, sha)
    with open(tmp_path / "streams" / stream.id / MEDIA, "ab") as f:
        f.write(b"half of an unacknowledged segment")  # the process died here
    reopened = StreamStore(tmp_path / "streams")  # a restart
    assert [s.sha256 for s in reopened.get(stream.id).segments] == [sha]
    path, sha1 = segment(tmp_path, "s1", b"b" * 30)
    reopened.append(stream.id, path, 2.0, 2.0, sha1)
    assert (tmp_path / "streams" / stream.id / MEDIA).read_bytes() == b"a" * 50 + b"b" * 30
    assert reopened.ids() == [stream.id]


def test_windows_are_complete_once_the_next_one_starts_or_the_stream_ends(tmp_path):
    store = StreamStore(tmp_path / "streams")
    stream = store.create(None, None)
    for i in range(5):  # 5 segments of 4 s, windows of 8 s: [0, 8) [8, 16) [16, 20)
        path, sha = segment(tmp_path, f"s{i}", bytes([65 + i]) * 10)
        stream, _ = store.append(stream.id, path, 4.0 * i, 4.0, sha)
    assert sorted(stream.complete_windows(8.0)) == [0, 1]  # window 2 may still grow
    window_file = store.window_file(stream, stream.windows(8.0)[1], tmp_path / "tmp")
    assert window_file.read_bytes() == b"C" * 10 + b"D" * 10
    stream = store.mark_indexed(stream.id, 0)
    assert sorted(stream.complete_windows(8.0)) == [1]
    stream = store.end(stream.id)
    assert sorted(stream.complete_windows(8.0)) == [1, 2]
    assert set(stream.delays(8.0)) == {0} and stream.delays(8.0)[0] >= 0
    assert store.remove(stream.id) is True and store.ids() == []
