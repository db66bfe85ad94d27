"""Reader for AdaCLIP's annotation JSON (MSR-VTT, DiDeMo, ActivityNet Captions).

AdaCLIP's preprocessing scripts write one JSON file per split, a mapping
``video id -> {"sentences": [...], "timestamps": [[start, end], ...], "extension": ".mp4"}``
(``timestamps`` for MSR-VTT and ActivityNet, ``duration`` for ActivityNet). Splits used in the
paper, as AdaCLIP ships them under ``annots/``:

- MSR-VTT 1k-A (JSFusion): ``annots/msrvtt-jsfusion/train.json`` (9k videos, 20 captions each) and
  ``val.json`` (the 1k-A test set, one caption per video), so ``test`` falls back to ``val.json``;
  ``annots/msrvtt-full/{train,val,test}.json`` is the full split.
- DiDeMo: ``annots/didemo/{train,val,test}.json`` (captions concatenated into a paragraph).
- ActivityNet Captions: ``annots/activitynet/{train,val}.json`` where ``val.json`` is ``val_1``
  (the split every paper reports on), so ``test`` falls back to it.

``DataConfig.annotations`` is either such a directory, where ``<split>.json`` is looked for first
and then the fallbacks in ``FALLBACKS``, or a single file: a mapping ``split -> {video id -> ...}``
or one split's mapping (whose name, if it is a split name, must match the split asked for).
Video files are looked up in ``DataConfig.video_root`` by the entry's ``extension``, by the id
itself as a file name, then by the id with ``VIDEO_EXTENSIONS``.
"""

from __future__ import annotations

import json
from pathlib import Path

from adaclip.data.records import VideoRecord, parse_captions, parse_timestamps
from adaclip.errors import DataError

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v")
FALLBACKS: dict[str, dict[str, tuple[str, ...]]] = {
    "msrvtt": {"test": ("val.json",)},
    "didemo": {},
    "activitynet": {"val": ("val_1.json",), "test": ("val.json", "val_1.json")},
}
_SPLIT_FILE_STEMS = {"train", "val", "test", "val_1", "val_2"}


def split_file_candidates(dataset: str, split: str) -> list[str]:
    """File names looked for, in order, in an annotation directory for ``split``."""
    return [f"{split}.json", *FALLBACKS.get(dataset, {}).get(split, ())]


def _load_json(path: Path) -> object:
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from e
    except OSError as e:
        raise DataError(f"cannot read annotation file {path}: {e.strerror or e}") from e


def _split_mapping(dataset: str, annotations: Path, split: str) -> tuple[Path, dict]:
    """The file read for ``split`` and its ``video id -> entry`` mapping."""
    if annotations.is_dir():
        names = split_file_candidates(dataset, split)
        found = next((annotations / n for n in names if (annotations / n).is_file()), None)
        if found is None:
            raise DataError(f"no annotation file for split {split!r} in {annotations}; looked for {names}")
        data = _load_json(found)
    elif annotations.is_file():
        found, data = annotations, _load_json(annotations)
        if isinstance(data, dict) and isinstance(data.get(split), dict) and "sentences" not in data[split]:
            data = data[split]  # a combined file: split -> {video id -> entry}
        elif found.stem in _SPLIT_FILE_STEMS and f"{found.stem}.json" not in split_file_candidates(
            dataset, split
        ):
            raise DataError(
                f"{found} holds split {found.stem!r} but split {split!r} was asked for; "
                f"point data.annotations at the directory holding {split_file_candidates(dataset, split)}"
            )
    else:
        raise DataError(f"annotations {annotations} do not exist; download AdaCLIP's annots/{dataset}* files")
    if not isinstance(data, dict):
        raise DataError(
            f"{found}: expected a JSON object mapping video id -> entry, got {type(data).__name__}"
        )
    return found, data


class _VideoFinder:
    """Finds a video file by id in one directory, listed once."""

    def __init__(self, root: Path):
        if not root.is_dir():
            raise DataError(
                f"video_root {root} is not a directory; set data.video_root to the videos' folder"
            )
        self.root = root
        self.names = {p.name for p in root.iterdir()}

    def find(self, video_id: str, extension: object) -> Path:
        if isinstance(extension, str) and extension:
            name = video_id + (extension if extension.startswith(".") else f".{extension}")
            if name in self.names:
                return self.root / name
        if video_id in self.names:
            return self.root / video_id
        for ext in VIDEO_EXTENSIONS:
            if video_id + ext in self.names:
                return self.root / (video_id + ext)
        return self.root / f"{video_id}.mp4"  # missing: decoding reports "file does not exist"


def _record(video_id: str, entry: object, split: str, where: str, finder: _VideoFinder) -> VideoRecord:
    if isinstance(entry, list):
        entry = {"sentences": entry}
    if not isinstance(entry, dict):
        raise DataError(f"{where}: expected an object with 'sentences', got {type(entry).__name__}")
    if "sentences" not in entry:
        raise DataError(f"{where}: missing key 'sentences'")
    captions = parse_captions(entry["sentences"], where)
    timestamps = parse_timestamps(entry.get("timestamps"), where)
    path = finder.find(video_id, entry.get("extension"))
    return VideoRecord(video_id, path, captions, split, timestamps)


def read_adaclip_json(dataset: str, annotations: Path, video_root: Path, split: str) -> list[VideoRecord]:
    """Every video of ``split`` from AdaCLIP-format annotations; DataError names the file and key."""
    if dataset not in FALLBACKS:
        raise DataError(f"unknown AdaCLIP dataset {dataset!r}; expected one of {sorted(FALLBACKS)}")
    found, data = _split_mapping(dataset, annotations, split)
    finder = _VideoFinder(video_root)
    records = [
        _record(str(video_id), entry, split, f"{found}: video {video_id!r}", finder)
        for video_id, entry in data.items()
    ]
    if not records:
        raise DataError(f"{found}: no videos in split {split!r}")
    return records
