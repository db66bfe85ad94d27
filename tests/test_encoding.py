"""The single-video ingestion path: hashing, batched encoding, qscore vectors and index points."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from adaclip.config import load_config
from adaclip.encoding import (
    QueryEncoder,
    content_hash,
    decode_for_model,
    encode_decoded,
    encode_queries,
    load_encoder_model,
    to_indexed,
)
from adaclip.index import video_id

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from adaclip.data.synth import make_corpus

    out = tmp_path_factory.mktemp("enc")
    make_corpus(out, videos=3, seed=3)
    return out


@pytest.fixture(scope="module")
def cfg():
    return load_config(TINY)


@pytest.fixture(scope="module")
def decoded(corpus, cfg):
    return [decode_for_model(p, cfg) for p in sorted((corpus / "videos").glob("*.mp4"))]


def test_content_hash_streams_sha256(tmp_path):
    path = tmp_path / "blob.bin"
    data = np.random.default_rng(0).bytes(3 * 1024 + 17)
    path.write_bytes(data)
    assert content_hash(path, chunk=1000) == hashlib.sha256(data).hexdigest()


def test_seeded_random_init_is_reproducible(cfg):
    a, b = load_encoder_model(cfg, seed=5), load_encoder_model(cfg, seed=5)
    c = load_encoder_model(cfg, seed=6)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_batched_encoding_matches_one_by_one(cfg, decoded):
    model = load_encoder_model(cfg, seed=1)
    batch = encode_decoded(model, decoded)
    k, dim = cfg.model.top_k, model.embed_dim
    for d, e in zip(decoded, batch, strict=True):
        (single,) = encode_decoded(model, [d])
        assert e.video.shape == (dim,) and e.frames.shape == (k, dim)
        assert np.linalg.norm(e.video) == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(e.video, single.video, atol=1e-5)
        np.testing.assert_allclose(e.frames, single.frames, atol=1e-5)
        assert np.all(np.diff(e.frame_timestamps) > 0), "kept frames are stored in temporal order"
        assert set(e.frame_indices) <= set(d.indices.tolist())
        np.testing.assert_allclose(e.frame_timestamps, e.frame_indices / d.fps, atol=1e-5)
        assert e.duration == pytest.approx(d.duration)


@pytest.mark.parametrize("normalize_frames", [False, True])
def test_qscore_vector_is_spec_mean_of_kept_frames(cfg, decoded, normalize_frames):
    """SPEC's mean, normalize(mean_k x_k); AdaCLIP's normalize(mean_k normalize(x_k)) as its option."""
    update = {"aggregation": "qscore", "mean_normalize_frames": normalize_frames}
    qcfg = cfg.model_copy(update={"model": cfg.model.model_copy(update=update)})
    model = load_encoder_model(qcfg, seed=2)
    (e,) = encode_decoded(model, decoded[:1])
    x = e.frames.astype(np.float64)
    if normalize_frames:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    mean = x.mean(axis=0)
    np.testing.assert_allclose(e.video, mean / np.linalg.norm(mean), atol=1e-5)


def test_queries_are_unit_vectors(cfg):
    model = load_encoder_model(cfg, seed=1)
    q = encode_queries(model, ["a red circle", "a big blue square in the middle"], cfg.data.max_text_tokens)
    assert q.shape == (2, model.embed_dim) and q.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("word_agg", ["none", "mlp", "transformer"])
def test_query_encoder_gives_the_eager_vectors_at_any_batch_size(cfg, word_agg):
    """The text path traced on one query equals the eager one for batches of 1 to 7 and captions
    of any length; a trace that would not (word aggregation by a transformer reshapes its per-row
    key mask with the batch size, which a trace fixes) is caught at batch size 2 and runs eagerly."""
    wcfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"word_agg": word_agg})})
    model = load_encoder_model(wcfg, seed=3)
    encoder = QueryEncoder(model, wcfg.data.max_text_tokens)
    if word_agg != "transformer":  # traced (the transformer's reshaped key mask may fall back)
        assert isinstance(encoder._text, torch.jit.ScriptModule)
    texts = [
        "a red circle",
        "a big blue square in the middle of a long caption " * 4,
        "x",
        "dog",
        "a",
        "b c",
        "",
    ]
    for n in (1, 3, 7):
        want = encode_queries(model, texts[:n], wcfg.data.max_text_tokens)
        np.testing.assert_allclose(encoder(texts[:n]), want, atol=1e-5)


def test_to_indexed_payload_and_id(cfg, decoded):
    model = load_encoder_model(cfg, seed=1)
    (e,) = encode_decoded(model, decoded[:1])
    item = to_indexed(e, "ab" * 32, model.model_version, "clips/cat.mp4", metadata={"lang": "en"})
    assert item.id == video_id("ab" * 32, model.model_version)
    p = item.payload
    assert p["source"] == "clips/cat.mp4" and p["title"] == "cat" and p["metadata"] == {"lang": "en"}
    assert p["model_version"] == model.model_version and p["content_hash"] == "ab" * 32
    assert p["frame_timestamps"] == pytest.approx(e.frame_timestamps.tolist())
    assert p["duration"] == pytest.approx(e.duration)
    assert item.frames.dtype == np.float32 and item.frames.shape == e.frames.shape
