"""Annotation readers (jsonl, AdaCLIP's MSR-VTT / DiDeMo / ActivityNet JSON) and the synthetic corpus."""

from adaclip.data.annotations import (
    CaptionMode,
    VideoRecord,
    caption_table,
    captions_for_training,
    read_annotations,
)
from adaclip.data.synth import make_corpus

__all__ = [
    "CaptionMode",
    "VideoRecord",
    "caption_table",
    "captions_for_training",
    "make_corpus",
    "read_annotations",
]
