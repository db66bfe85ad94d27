"""adaclip.ops against independent float64 references written from SPEC.md (not from the code)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adaclip.ops import (
    distillation_loss,
    hard_topk,
    hard_topk_from_noise,
    k_schedule,
    mean_pool_similarity,
    normalize,
    query_scoring_similarity,
    query_scoring_weights,
    symmetric_contrastive_loss,
    tau_schedule,
    weighted_pool,
)

SHAPES = [(3, 4, 5, 8), (1, 1, 1, 1), (4, 3, 1, 6), (2, 5, 7, 1), (6, 2, 3, 4)]  # (T, V, F, D)
TEMPERATURES = [0.01, 0.1, 1.0, 100.0]


# ---------------------------------------------------------------- float64 references (from SPEC)
def ref_normalize(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.sqrt(np.sum(v * v))), 1e-8)


def ref_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def ref_mean_pool(text: np.ndarray, frames: np.ndarray, normalize_frames: bool) -> np.ndarray:
    out = np.zeros((text.shape[0], frames.shape[0]))
    for t in range(text.shape[0]):
        for v in range(frames.shape[0]):
            xs = [ref_normalize(x) if normalize_frames else x for x in frames[v]]
            video = ref_normalize(np.mean(xs, axis=0))
            out[t, v] = ref_normalize(text[t]) @ video
    return out


def ref_qscore(text: np.ndarray, frames: np.ndarray, temperature: float, variant: str) -> np.ndarray:
    out = np.zeros((text.shape[0], frames.shape[0]))
    for t in range(text.shape[0]):
        tn = ref_normalize(text[t])
        for v in range(frames.shape[0]):
            s = np.array([tn @ ref_normalize(x) for x in frames[v]])
            w = ref_softmax(s / temperature)
            if variant == "scores":
                out[t, v] = np.sum(w * s)
            else:
                pooled = sum(w[f] * frames[v, f] for f in range(frames.shape[1]))
                out[t, v] = tn @ ref_normalize(pooled)
    return out


def random_inputs(shape, seed: int, dtype=torch.float32):
    t_, v_, f_, d_ = shape
    gen = torch.Generator().manual_seed(seed)
    text = torch.randn(t_, d_, generator=gen).to(dtype)
    frames = torch.randn(v_, f_, d_, generator=gen).to(dtype)
    # The reference sees exactly the values the function sees (after any rounding to dtype).
    return text, frames, text.double().numpy(), frames.double().numpy()


# ---------------------------------------------------------------- normalize / mean pooling
def test_normalize_unit_norm_and_zero_vector():
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1e-12, 0.0]])
    out = normalize(x)
    assert torch.allclose(out[0], torch.tensor([0.6, 0.8]))
    assert torch.equal(out[1], torch.zeros(2))  # clamped norm: no NaN
    assert torch.allclose(out[2], torch.tensor([1e-4, 0.0]))  # norm clamped at 1e-8


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("normalize_frames", [False, True])
def test_mean_pool_similarity_matches_reference(shape, normalize_frames):
    text, frames, tn, fn = random_inputs(shape, seed=hash(shape) % 1000)
    got = mean_pool_similarity(text, frames, normalize_frames=normalize_frames)
    assert got.shape == (shape[0], shape[1]) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), ref_mean_pool(tn, fn, normalize_frames), atol=1e-5)


def test_mean_pool_normalize_frames_option_differs_when_frame_norms_differ():
    text = torch.tensor([[1.0, 0.0]])
    frames = torch.tensor([[[10.0, 0.0], [0.0, 1.0]]])
    raw = mean_pool_similarity(text, frames).item()
    per_frame = mean_pool_similarity(text, frames, normalize_frames=True).item()
    assert raw == pytest.approx(10 / math.sqrt(101), abs=1e-6)
    assert per_frame == pytest.approx(1 / math.sqrt(2), abs=1e-6)


# ---------------------------------------------------------------- query scoring
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("variant", ["embedding", "scores"])
def test_query_scoring_matches_reference(shape, temperature, variant):
    text, frames, tn, fn = random_inputs(shape, seed=7 + len(str(shape)))
    got = query_scoring_similarity(text, frames, temperature=temperature, variant=variant)
    assert got.shape == (shape[0], shape[1]) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), ref_qscore(tn, fn, temperature, variant), atol=2e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("variant", ["embedding", "scores"])
def test_query_scoring_half_inputs_computed_in_float32(dtype, variant):
    text, frames, tn, fn = random_inputs((3, 4, 6, 16), seed=3, dtype=dtype)
    for temperature in (0.01, 0.1, 1.0):
        got = query_scoring_similarity(text, frames, temperature=temperature, variant=variant)
        assert got.dtype == torch.float32
        # Close to the float64 result on the same rounded inputs: the maths ran in float32, not half.
        np.testing.assert_allclose(got.numpy(), ref_qscore(tn, fn, temperature, variant), atol=5e-5)
    assert mean_pool_similarity(text, frames).dtype == torch.float32


def test_query_scoring_float64_stays_float64():
    text, frames, tn, fn = random_inputs((2, 3, 4, 5), seed=11, dtype=torch.float64)
    got = query_scoring_similarity(text, frames, temperature=0.1)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), ref_qscore(tn, fn, 0.1, "embedding"), atol=1e-12)


@pytest.mark.parametrize("variant", ["embedding", "scores"])
def test_query_scoring_chunking_gives_same_result(variant):
    text, frames, _, _ = random_inputs((9, 5, 4, 6), seed=5)
    whole = query_scoring_similarity(text, frames, 0.1, variant)
    for elements in (1, 30, 61, 10_000):  # 1 caption per chunk, a few, all at once
        chunked = query_scoring_similarity(text, frames, 0.1, variant, max_chunk_elements=elements)
        assert torch.allclose(chunked, whole, atol=1e-6)


def test_query_scoring_high_temperature_is_mean_pooling():
    text, frames, _, _ = random_inputs((4, 5, 6, 8), seed=21)
    mean = mean_pool_similarity(text, frames)
    assert torch.allclose(query_scoring_similarity(text, frames, temperature=1e5), mean, atol=1e-4)
    assert not torch.allclose(query_scoring_similarity(text, frames, temperature=0.1), mean, atol=1e-3)


@pytest.mark.parametrize("variant", ["embedding", "scores"])
def test_query_scoring_low_temperature_is_best_single_frame(variant):
    text, frames, tn, fn = random_inputs((4, 5, 6, 8), seed=22)
    best = np.array(
        [[max(ref_normalize(t) @ ref_normalize(x) for x in video) for video in fn] for t in tn]
    )  # (T, V) best frame cosine
    got = query_scoring_similarity(text, frames, temperature=1e-5, variant=variant)
    np.testing.assert_allclose(got.numpy(), best, atol=1e-4)


def test_query_scoring_weights_match_reference_and_argmax():
    text, frames, tn, fn = random_inputs((3, 4, 5, 8), seed=9)
    w = query_scoring_weights(text, frames, temperature=0.1)
    assert w.shape == (3, 4, 5)
    for t in range(3):
        for v in range(4):
            s = np.array([ref_normalize(tn[t]) @ ref_normalize(x) for x in fn[v]])
            np.testing.assert_allclose(w[t, v].numpy(), ref_softmax(s / 0.1), atol=1e-5)
            assert int(w[t, v].argmax()) == int(np.argmax(s))


def test_query_scoring_rejects_bad_inputs():
    text, frames, _, _ = random_inputs((2, 3, 4, 5), seed=1)
    with pytest.raises(ValueError, match="temperature"):
        query_scoring_similarity(text, frames, temperature=0.0)
    with pytest.raises(ValueError, match="variant"):
        query_scoring_similarity(text, frames, variant="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="width"):
        query_scoring_similarity(text[:, :4], frames)
    with pytest.raises(ValueError, match=r"\(V, F, D\)"):
        mean_pool_similarity(text, frames[0])


# ---------------------------------------------------------------- weighted pool
@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_weighted_pool_matches_reference(temperature, dtype):
    gen = torch.Generator().manual_seed(4)
    frames = torch.randn(3, 5, 7, generator=gen).to(dtype)
    scores = torch.randn(3, 5, generator=gen).to(dtype)
    got = weighted_pool(frames, scores, temperature)
    assert got.shape == (3, 7) and got.dtype == torch.float32
    fx, sx = frames.double().numpy(), scores.double().numpy()
    for b in range(3):
        w = ref_softmax(sx[b] / temperature)
        want = ref_normalize(sum(w[k] * fx[b, k] for k in range(5)))
        np.testing.assert_allclose(got[b].numpy(), want, atol=2e-5)


# ---------------------------------------------------------------- Hard-Top-k
def _assert_valid_selection(a: torch.Tensor, b: int, k: int, n: int) -> None:
    assert a.shape == (b, k, n)
    values = a.detach().float()
    assert torch.all((values == 0) | (values == 1)), "forward value must be exact one-hots"
    assert torch.all(values.sum(-1) == 1), "each of the K rows picks exactly one frame"
    picks = values.argmax(-1)  # (B, K)
    for row in picks.tolist():
        assert len(set(row)) == k, f"picks must be distinct, got {row}"


@pytest.mark.parametrize(("b", "n", "k"), [(3, 8, 4), (2, 5, 5), (4, 6, 1), (1, 1, 1)])
@pytest.mark.parametrize("tau", [5.0, 1.0, 0.5, 0.05])
def test_hard_topk_training_picks_k_distinct_one_hots(b, n, k, tau):
    gen = torch.Generator().manual_seed(b * 100 + n * 10 + k)
    logits = torch.randn(b, n, generator=gen) * 3
    _assert_valid_selection(hard_topk(logits, k, tau, training=True, generator=gen), b, k, n)


def test_hard_topk_gradients_reach_logits():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 8, generator=gen, requires_grad=True)
    features = torch.randn(4, 8, 6, generator=gen)
    selected = hard_topk(logits, 3, 1.0, generator=gen) @ features  # (B, K, D)
    (selected * torch.randn(selected.shape, generator=gen)).sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert torch.all(logits.grad.abs().sum(-1) > 0), "every video's logits get a gradient"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_hard_topk_inference_is_topk_by_logit_highest_first(dtype):
    gen = torch.Generator().manual_seed(1)
    logits = torch.randperm(40, generator=gen).reshape(4, 10).to(dtype) / 4  # distinct values
    got = hard_topk(logits, 4, tau=1.0, training=False)
    assert got.dtype == dtype
    _assert_valid_selection(got, 4, 4, 10)
    order = np.argsort(-logits.float().numpy(), axis=1, kind="stable")[:, :4]
    assert got.float().argmax(-1).tolist() == order.tolist()
    again = hard_topk(logits, 4, tau=1.0, training=False)
    assert torch.equal(got, again)


@pytest.mark.parametrize("k", [0, -1, 7, 2.0, True])
def test_hard_topk_rejects_invalid_k(k):
    with pytest.raises(ValueError, match="k must be"):
        hard_topk(torch.zeros(2, 6), k, 1.0)
    with pytest.raises(ValueError, match="k must be"):
        hard_topk(torch.zeros(2, 6), k, 1.0, training=False)


def test_hard_topk_rejects_bad_shape_and_tau():
    with pytest.raises(ValueError, match=r"\(B, N\)"):
        hard_topk(torch.zeros(6), 2, 1.0)
    with pytest.raises(ValueError, match="temperature"):
        hard_topk(torch.zeros(2, 6), 2, 0.0)


def test_hard_topk_seeded_generator_is_reproducible():
    logits = torch.randn(8, 16, generator=torch.Generator().manual_seed(3))
    draws = [hard_topk(logits, 5, 1.0, generator=torch.Generator().manual_seed(s)) for s in (42, 42, 43)]
    assert torch.equal(draws[0], draws[1])
    assert not torch.equal(draws[0], draws[2])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_hard_topk_half_logits(dtype):
    logits = torch.randn(3, 7, generator=torch.Generator().manual_seed(8)).to(dtype).requires_grad_()
    got = hard_topk(logits, 3, 1.0, generator=torch.Generator().manual_seed(5))
    assert got.dtype == dtype
    _assert_valid_selection(got, 3, 3, 7)
    same = hard_topk(logits.detach().float(), 3, 1.0, generator=torch.Generator().manual_seed(5))
    assert torch.equal(got.float(), same)
    got.float().pow(2).mul(torch.arange(7.0)).sum().backward()
    assert logits.grad is not None and logits.grad.dtype == dtype and torch.isfinite(logits.grad).all()


def test_hard_topk_first_pick_follows_softmax_of_logits():
    """Gumbel-max: the first pick is frame i with probability softmax(logits)_i."""
    logits = torch.tensor([1.0, 0.0, -1.0, 0.5]).repeat(4000, 1)
    a = hard_topk(logits, 1, 1.0, generator=torch.Generator().manual_seed(0))
    freq = a[:, 0].mean(0).numpy()
    np.testing.assert_allclose(freq, ref_softmax(np.array([1.0, 0.0, -1.0, 0.5])), atol=0.03)


def ref_hard_topk_rounds(logits: np.ndarray, gumbel: np.ndarray, k: int, tau: float):
    """SPEC section 3 in float64: returns soft one-hots (B, K, N) and hard picks (B, K)."""
    b, n = logits.shape
    soft = np.zeros((b, k, n))
    picks = np.zeros((b, k), dtype=int)
    for i in range(b):
        z = logits[i] - logits[i].max()
        p = np.maximum(z - np.log(np.exp(z).sum()), np.log(1e-8))
        y = p + gumbel[i]
        a_prev = np.zeros(n)
        taken: list[int] = []
        for r in range(k):
            y = y + np.log(np.maximum(1.0 - a_prev, 1e-40))
            a = ref_softmax(y / tau)
            masked = np.where(np.isin(np.arange(n), taken), -np.inf, a)
            picks[i, r] = int(np.argmax(masked))
            taken.append(picks[i, r])
            soft[i, r] = a
            a_prev = a
    return soft, picks


@pytest.mark.parametrize("tau", [5.0, 1.0, 0.5])
@pytest.mark.parametrize(("n", "k"), [(8, 4), (6, 6), (5, 1)])
def test_hard_topk_soft_rounds_match_float64_reference(tau, n, k):
    gen = torch.Generator().manual_seed(int(tau * 10) + n * k)
    logits = torch.randn(4, n, generator=gen) * 2
    logits[0, 0] = -30.0  # exercises the log(1e-8) floor on p
    u = torch.rand(4, n, generator=gen, dtype=torch.float64)
    gumbel = -torch.log(-torch.log(u))
    a, soft = hard_topk_from_noise(logits, gumbel.float(), k, tau)
    want_soft, want_picks = ref_hard_topk_rounds(
        logits.double().numpy(), gumbel.float().double().numpy(), k, tau
    )
    np.testing.assert_allclose(soft.detach().numpy(), want_soft, atol=1e-5, rtol=1e-4)
    assert a.detach().argmax(-1).tolist() == want_picks.tolist()
    _assert_valid_selection(a, 4, k, n)


def test_hard_topk_straight_through_gradient_is_the_soft_gradient():
    gen = torch.Generator().manual_seed(12)
    logits = torch.randn(3, 6, generator=gen, requires_grad=True)
    gumbel = -torch.log(-torch.log(torch.rand(3, 6, generator=gen)))
    weights = torch.randn(3, 2, 6, generator=gen)
    a, _ = hard_topk_from_noise(logits, gumbel, 2, 0.7)
    (grad_a,) = torch.autograd.grad((a * weights).sum(), logits)
    _, soft = hard_topk_from_noise(logits, gumbel, 2, 0.7)
    (grad_soft,) = torch.autograd.grad((soft * weights).sum(), logits)
    assert torch.allclose(grad_a, grad_soft) and grad_a.abs().sum() > 0


# ---------------------------------------------------------------- schedules
@pytest.mark.parametrize("epoch", [0, 1, 5, 20, 51, 52, 100])
def test_tau_schedule_closed_form(epoch):
    assert tau_schedule(epoch) == pytest.approx(max(5.0 * math.exp(-0.045 * epoch), 0.5), rel=1e-12)
    assert tau_schedule(epoch, init_tau=2.0, decay=0.1, min_tau=0.1) == pytest.approx(
        max(2.0 * math.exp(-0.1 * epoch), 0.1), rel=1e-12
    )


def test_tau_schedule_reaches_floor():
    assert tau_schedule(0) == 5.0
    assert tau_schedule(1000) == 0.5


def test_k_schedule_linear_warmup():
    # N=16, top_k=12, warm-up 3 epochs: 15 -> 14 -> 13 -> 12, then 12 for good.
    assert [k_schedule(e, 16, 12, 3) for e in range(6)] == [15, 14, 13, 12, 12, 12]
    ks = [k_schedule(e, 64, 32, 10) for e in range(15)]
    for e, k in enumerate(ks):
        if e < 10:
            assert k == math.floor(63 + (32 - 63) * e / 10 + 0.5)
        assert 32 <= k <= 64
    assert ks[0] == 63 and ks[10:] == [32] * 5
    assert all(a >= b for a, b in zip(ks, ks[1:], strict=False))


def test_k_schedule_edge_cases():
    assert [k_schedule(e, 16, 12, 0) for e in range(4)] == [12] * 4  # no warm-up
    assert [k_schedule(e, 8, 8, 4) for e in range(6)] == [8] * 6  # keep all frames
    assert k_schedule(0, 8, 7, 5) == 7  # N - 1 == top_k
    with pytest.raises(ValueError, match="top_k"):
        k_schedule(0, 8, 9, 2)


# ---------------------------------------------------------------- loss
def ref_symmetric_loss(logits: np.ndarray) -> float:
    def ce_diag(m: np.ndarray) -> float:
        total = 0.0
        for i in range(m.shape[0]):
            row = m[i]
            total += -(row[i] - row.max() - math.log(np.exp(row - row.max()).sum()))
        return total / m.shape[0]

    return (ce_diag(logits) + ce_diag(logits.T)) / 2


@pytest.mark.parametrize("b", [1, 2, 5, 16])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_symmetric_contrastive_loss_matches_reference(b, dtype):
    logits = (torch.randn(b, b, generator=torch.Generator().manual_seed(b)) * 10).to(dtype)
    got = symmetric_contrastive_loss(logits)
    assert got.dim() == 0 and got.dtype in (torch.float32, torch.float64)
    assert got.item() == pytest.approx(ref_symmetric_loss(logits.double().numpy()), rel=1e-5, abs=1e-6)


def test_symmetric_loss_is_not_one_sided():
    logits = torch.tensor([[2.0, 0.0], [1.0, 0.0]])  # rows and columns give different CE
    assert symmetric_contrastive_loss(logits).item() == pytest.approx(ref_symmetric_loss(logits.numpy()))
    with pytest.raises(ValueError, match="square"):
        symmetric_contrastive_loss(torch.zeros(2, 3))


# ---------------------------------------------------------------- distillation (TeachCLIP-style)
def ref_distillation(student: np.ndarray, teacher: np.ndarray) -> float:
    """Mean over rows of KL(softmax(teacher row) || softmax(student row)), same over columns, averaged."""

    def kl_rows(s: np.ndarray, t: np.ndarray) -> float:
        total = 0.0
        for s_row, t_row in zip(s, t, strict=True):
            p, q = ref_softmax(t_row), ref_softmax(s_row)
            total += float(np.sum(p * (np.log(p) - np.log(q))))
        return total / s.shape[0]

    return (kl_rows(student, teacher) + kl_rows(student.T, teacher.T)) / 2


@pytest.mark.parametrize("b", [1, 2, 7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_distillation_loss_matches_reference(b, dtype):
    g = torch.Generator().manual_seed(100 + b)
    student, teacher = (torch.randn(2, b, b, generator=g, dtype=torch.float64) * 8).to(dtype)
    got = distillation_loss(student, teacher)
    assert got.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    want = ref_distillation(student.double().numpy(), teacher.double().numpy())
    assert got.item() == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert distillation_loss(teacher, teacher).item() == pytest.approx(0.0, abs=1e-6)


def test_distillation_gradient_reaches_the_student_only():
    """d/ds of the loss is (softmax_rows(s) - softmax_rows(t) + softmax_cols(s) - softmax_cols(t)) / 2B."""
    g = torch.Generator().manual_seed(7)
    b = 5
    student = (torch.randn(b, b, generator=g, dtype=torch.float64) * 3).requires_grad_()
    teacher = (torch.randn(b, b, generator=g, dtype=torch.float64) * 3).requires_grad_()
    distillation_loss(student, teacher).backward()
    s, t = student.detach().numpy(), teacher.detach().numpy()
    rows = np.stack([ref_softmax(r) for r in s]) - np.stack([ref_softmax(r) for r in t])
    cols = (np.stack([ref_softmax(c) for c in s.T]) - np.stack([ref_softmax(c) for c in t.T])).T
    np.testing.assert_allclose(student.grad.numpy(), (rows + cols) / (2 * b), rtol=1e-9, atol=1e-12)
    assert teacher.grad is None


def test_distillation_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="one shape"):
        distillation_loss(torch.zeros(2, 2), torch.zeros(3, 3))
