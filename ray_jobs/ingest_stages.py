"""Ray Data stages of bulk ingestion: decode (`frame_store.decode_rows` tasks on CPU workers),
then encode (`EncodeVideos`, an actor pool, GPU if any).

`EncodeVideos` loads the model once in `__init__` and maps a dict of numpy arrays to a dict of
numpy arrays, so it is testable on a plain dict without Ray. The maths is `adaclip.encoding`'s,
shared with the Serve app. A file that failed to decode travels on as a row with ``error`` set,
so the driver records it without a side channel.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from adaclip.config import Config
from adaclip.encoding import EncodedVideo, encode_decoded, load_encoder_model
from adaclip.video.decode import DecodedVideo


class EncodeVideos:
    """Encode decoded rows with the model (loaded once per actor; GPU when Ray gave it one)."""

    PASS = ("path", "sha256", "source", "title", "metadata", "error")

    def __init__(self, config: dict[str, Any], checkpoint: str | None, seed: int):
        import torch

        self.cfg = Config.model_validate(config)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = load_encoder_model(self.cfg, checkpoint, device, seed)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = np.array([not e for e in batch["error"]], dtype=bool)
        decoded = [DecodedVideo.from_columns(batch, i) for i in np.flatnonzero(ok)]
        encoded = iter(encode_decoded(self.model, decoded))
        rows = [next(encoded) if good else None for good in ok]
        out = {key: batch[key] for key in self.PASS}
        return {**out, **EncodedVideo.columns(rows, self.model.embed_dim, self.cfg.model.kept_frames)}
