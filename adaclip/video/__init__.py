"""Video decoding (decord, PyAV fallback) and frame sampling, with bounded memory and typed errors."""

from adaclip.video.decode import DecodedVideo, decode_frames_chunked, decode_video
from adaclip.video.encode import pick_codec, write_video
from adaclip.video.probe import VideoInfo, check_file, inspect_video, probe_video
from adaclip.video.sampling import SamplingMode, sample_indices

__all__ = [
    "DecodedVideo",
    "SamplingMode",
    "VideoInfo",
    "check_file",
    "decode_frames_chunked",
    "decode_video",
    "inspect_video",
    "pick_codec",
    "probe_video",
    "sample_indices",
    "write_video",
]
