"""Small real-world-like media files for tests, written with PyAV: H.264 + AAC in mp4 at 720p and
1080p, odd frame sizes, MPEG-4 Part 2 in Matroska, VP8 and VP9 in WebM, one frame, minutes at a
low frame rate, and audio only.

Every frame's grey background encodes its index (``level``), so a test can tell from the decoded
pixels which frame it got. Files stay small and fast to write: short, low frame rates, fast presets.

Encoders in this PyAV 18.1 build (FFmpeg 7.1): libx264, mpeg4, libvpx (VP8), libvpx-vp9, ffv1,
libx265, libsvtav1; audio aac, mp2, libopus, libmp3lame, flac (no libaom, no libvorbis).
libx264 refuses odd sizes in 4:2:0 (``avcodec_open2`` fails on 321x241); it accepts them in
yuv444p (High 4:4:4), and mpeg4, libvpx and libvpx-vp9 accept odd 4:2:0 sizes (chroma rounded up).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np


@dataclass(frozen=True)
class MediaFile:
    """A written file and what it holds, as the writer knows it (never read back from the file)."""

    path: Path
    num_frames: int  # 0: no video stream
    fps: float
    width: int
    height: int
    audio: str | None = None  # audio codec, if the file has an audio track

    @property
    def duration(self) -> float:
        """Seconds of video: frames x frame duration."""
        return self.num_frames / self.fps if self.num_frames else 0.0


def level(index: int, num_frames: int) -> int:
    """Grey background of frame ``index``: 30 for the first frame rising to 220 for the last."""
    return 30 if num_frames <= 1 else round(30 + 190 * index / (num_frames - 1))


def frames(width: int, height: int, num_frames: int) -> Iterator[np.ndarray]:
    """(H, W, 3) uint8 RGB frames: the background at ``level`` and a small red square moving along
    the top edge (motion and texture for the encoder, away from the centre the tests measure)."""
    side = max(2, min(width, height) // 8)
    for i in range(num_frames):
        frame = np.full((height, width, 3), level(i, num_frames), np.uint8)
        x = (i * side) % max(1, width - side)
        frame[:side, x : x + side] = (230, 20, 20)
        yield frame


def _audio_frames(rate: int, seconds: float) -> Iterator[av.AudioFrame]:
    """A 440 Hz stereo tone of ``seconds`` as float planar frames of 1024 samples (PyAV re-frames
    them to the encoder's frame size)."""
    total, size, start = round(seconds * rate), 1024, 0
    while start < total:
        n = min(size, total - start)
        t = (np.arange(start, start + n) / rate).astype(np.float32)
        tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = rate, start
        yield frame
        start += n


def write(
    path: Path,
    codec: str,
    width: int,
    height: int,
    num_frames: int,
    fps: int,
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
    audio: tuple[str, int] | None = None,
    audio_seconds: float | None = None,
    faststart: bool = False,
) -> MediaFile:
    """Write ``num_frames`` of ``frames`` with ``codec``, plus a tone track when ``audio`` =
    (codec, sample rate) is given, as long as the video unless ``audio_seconds`` says otherwise;
    the container follows the suffix."""
    container_options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=container_options) as container:
        video = container.add_stream(codec, rate=fps, options=options or {})
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        video.codec_context.thread_count = 1
        sound = container.add_stream(audio[0], rate=audio[1]) if audio else None
        if sound is not None:
            sound.layout, sound.bit_rate = "stereo", 64000
        for image in frames(width, height, num_frames):
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if sound is not None:
            seconds = num_frames / fps if audio_seconds is None else audio_seconds
            for chunk in _audio_frames(audio[1], seconds):
                for packet in sound.encode(chunk):
                    container.mux(packet)
            for packet in sound.encode():
                container.mux(packet)
    return MediaFile(path, num_frames, float(fps), width, height, audio[0] if audio else None)


def write_audio_only(path: Path, seconds: float = 2.0, codec: str = "aac", rate: int = 44100) -> MediaFile:
    """An audio file (.m4a: AAC in mp4) with no video stream at all."""
    with av.open(str(path), "w") as container:
        sound = container.add_stream(codec, rate=rate)
        sound.layout = "stereo"
        for chunk in _audio_frames(rate, seconds):
            for packet in sound.encode(chunk):
                container.mux(packet)
        for packet in sound.encode():
            container.mux(packet)
    return MediaFile(path, 0, 0.0, 0, 0, codec)


_X264 = {"preset": "veryfast", "crf": "23", "threads": "1"}  # B-frames on, as cameras and phones use
_VPX = {"deadline": "realtime", "cpu-used": "8", "threads": "1"}


def make_all(out: Path) -> dict[str, MediaFile]:
    """Every kind of file the real-world tests cover, by name (about 2 s to write on one core)."""
    out.mkdir(parents=True, exist_ok=True)
    return {
        "h264_720p": write(
            out / "h264_aac_720p.mp4", "libx264", 1280, 720, 8, 4, options=_X264, audio=("aac", 44100)
        ),
        "h264_1080p": write(
            out / "h264_aac_1080p.mp4",
            "libx264",
            1920,
            1080,
            6,
            3,
            options=_X264,
            audio=("aac", 48000),
            faststart=True,
        ),
        "odd_mpeg4": write(out / "odd_321x241.mp4", "mpeg4", 321, 241, 10, 5, options={"qscale": "3"}),
        "odd_h264_444": write(
            out / "odd_321x241_yuv444.mp4", "libx264", 321, 241, 10, 5, pix_fmt="yuv444p", options=_X264
        ),
        "mpeg4_mkv": write(
            out / "mpeg4_mp2.mkv", "mpeg4", 320, 240, 16, 8, options={"qscale": "3"}, audio=("mp2", 44100)
        ),
        "vp9_webm": write(
            out / "vp9_opus.webm", "libvpx-vp9", 320, 180, 16, 8, options=_VPX, audio=("libopus", 48000)
        ),
        "vp8_webm": write(out / "vp8.webm", "libvpx", 256, 144, 12, 6, options=_VPX),
        "one_frame": write(out / "one_frame.mp4", "libx264", 160, 120, 1, 25, options=_X264),
        "long_mp4": write(out / "long_180s.mp4", "libx264", 160, 90, 180, 1, options=_X264),
        "long_mkv": write(out / "long_150s.mkv", "mpeg4", 160, 96, 300, 2, options={"qscale": "5"}),
        "mkv_audio_longer": write(
            out / "audio_outlasts_video.mkv",
            "mpeg4",
            192,
            108,
            8,
            4,
            options={"qscale": "3"},
            audio=("mp2", 32000),
            audio_seconds=6.0,
        ),
    }


def write_ts_segments(
    out: Path, num_segments: int, seg_frames: int, fps: int, width: int = 96, height: int = 64
) -> list[Path]:
    """A live stream cut into MPEG-TS segments (adaclip.data.segments) whose frame i has grey level
    ``level(i, num_segments * seg_frames)``."""
    from adaclip.data.segments import write_ts_segments as write

    return write(out, frames(width, height, num_segments * seg_frames), num_segments, seg_frames, fps)
