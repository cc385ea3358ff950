"""Training losses and curriculum (SPEC sections 4 and 5): every "must" is pinned here.

Reference values are computed independently in float64 with the textbook formulas.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from interlat_bench.trainers.curriculum import REFERENCE_CHOICES, Curriculum, mix_slot, round_half_up
from interlat_bench.trainers.losses import (
    LN2,
    LossWeights,
    align_loss,
    combine,
    compression_kl_loss,
    compression_weights,
    derangement,
    entropy,
    js_divergence,
    kl,
    negative_latents,
    plan_alignment_loss,
    separation_loss,
)


def _g(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _p64(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.double(), dim=-1)


def _kl64(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return (p * (p.log() - q.log())).sum(-1)


def _js64(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    m = 0.5 * (p + q)
    return 0.5 * _kl64(p, m) + 0.5 * _kl64(q, m)


def _cos64(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return (p * q).sum(-1) / (p.norm(dim=-1) * q.norm(dim=-1))


# ------------------------------------------------------------------ KL / JS


def test_kl_matches_reference_and_is_asymmetric() -> None:
    a = torch.randn(4, 5, 11, generator=_g(0)) * 2
    b = torch.randn(4, 5, 11, generator=_g(1)) * 2
    got = kl(a, b)
    assert got.shape == (4, 5) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), _kl64(_p64(a), _p64(b)), atol=1e-5, rtol=1e-4)
    assert (kl(a, b) - kl(b, a)).abs().max().item() > 1e-2
    assert kl(a, a).abs().max().item() < 1e-6


def test_js_of_identical_distributions_is_zero() -> None:
    for scale in (1.0, 10.0, 100.0):
        a = torch.randn(3, 7, 50, generator=_g(2)) * scale
        assert js_divergence(a, a.clone()).abs().max().item() < 1e-6


def test_js_is_symmetric_and_matches_reference() -> None:
    a = torch.randn(6, 9, 17, generator=_g(3)) * 3
    b = torch.randn(6, 9, 17, generator=_g(4)) * 3
    ab, ba = js_divergence(a, b), js_divergence(b, a)
    torch.testing.assert_close(ab, ba, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ab.double(), _js64(_p64(a), _p64(b)), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("scale", [0.5, 5.0, 50.0, 500.0])
def test_js_never_exceeds_ln2_on_random_logits(scale: float) -> None:
    a = torch.randn(200, 32, generator=_g(5)) * scale
    b = torch.randn(200, 32, generator=_g(6)) * scale
    js = js_divergence(a, b)
    assert js.min().item() >= 0.0
    assert js.max().item() <= LN2 + 1e-6


def test_js_approaches_ln2_for_disjoint_distributions() -> None:
    v = 8
    a = torch.full((v,), -60.0)
    b = torch.full((v,), -60.0)
    a[:4] = 60.0  # mass on tokens 0..3
    b[4:] = 60.0  # mass on tokens 4..7
    js = js_divergence(a, b).item()
    assert js <= LN2 + 1e-6
    assert js == pytest.approx(LN2, abs=1e-5)
    # One-hot extremes, including -inf logits (masked vocabulary): exactly ln 2, finite grads.
    p = torch.tensor([0.0, -math.inf, -math.inf], requires_grad=True)
    q = torch.tensor([-math.inf, 0.0, -math.inf])
    out = js_divergence(p, q)
    assert out.item() == pytest.approx(LN2, abs=1e-6)
    out.backward()
    assert torch.isfinite(p.grad).all()


def test_swapped_kl_arguments_would_break_the_bound() -> None:
    """The public code's 'JS' (KL(m||p) form) exceeds ln 2 on these inputs; ours does not."""
    a = torch.tensor([8.0, -8.0])
    b = torch.tensor([-8.0, 8.0])
    p, q = _p64(a), _p64(b)
    m = 0.5 * (p + q)
    swapped = 0.5 * _kl64(m, p) + 0.5 * _kl64(m, q)
    assert swapped.item() > 2 * LN2
    assert js_divergence(a, b).item() <= LN2


def test_entropy_reference() -> None:
    a = torch.randn(5, 13, generator=_g(7))
    p = _p64(a)
    torch.testing.assert_close(entropy(a).double(), -(p * p.log()).sum(-1), atol=1e-5, rtol=1e-5)
    assert entropy(torch.zeros(16)).item() == pytest.approx(math.log(16), abs=1e-5)


# ------------------------------------------------------------------ plan alignment


def _manual_plan(lat: torch.Tensor, plan: torch.Tensor) -> float:
    pl, pp = _p64(lat), _p64(plan)
    return (0.7 * _kl64(pp, pl) + 0.3 * (1 - _cos64(pl, pp))).mean().item()


def test_plan_loss_uses_kl_plan_to_lat_direction() -> None:
    # p_lat is peaked, p_plan is flat: KL(plan||lat) is large, KL(lat||plan) small.
    lat = torch.tensor([[[6.0, 0.0, 0.0, 0.0]]])
    plan = torch.tensor([[[0.0, 0.0, 0.0, 0.0]]])
    mask = torch.tensor([[True]])
    got = plan_alignment_loss(lat, plan, mask, mask).item()
    pl, pp = _p64(lat), _p64(plan)
    forward = (0.7 * _kl64(pp, pl) + 0.3 * (1 - _cos64(pl, pp))).item()
    reverse = (0.7 * _kl64(pl, pp) + 0.3 * (1 - _cos64(pl, pp))).item()
    assert abs(forward - reverse) > 1.0  # the direction matters on this input
    assert got == pytest.approx(forward, rel=1e-5)


def test_plan_loss_cosine_part_and_zero_for_identical() -> None:
    lat = torch.randn(2, 4, 9, generator=_g(8))
    plan = torch.randn(2, 4, 9, generator=_g(9))
    mask = torch.ones(2, 4, dtype=torch.bool)
    pl, pp = _p64(lat), _p64(plan)
    cos_only = plan_alignment_loss(lat, plan, mask, mask, kl_weight=0.0, cos_weight=1.0).item()
    assert cos_only == pytest.approx((1 - _cos64(pl, pp)).mean().item(), rel=1e-5)
    kl_only = plan_alignment_loss(lat, plan, mask, mask, kl_weight=1.0, cos_weight=0.0).item()
    assert kl_only == pytest.approx(_kl64(pp, pl).mean().item(), rel=1e-5)
    full = plan_alignment_loss(lat, plan, mask, mask).item()
    assert full == pytest.approx(0.7 * kl_only + 0.3 * cos_only, rel=1e-5)
    assert plan_alignment_loss(lat, lat.clone(), mask, mask).item() == pytest.approx(0.0, abs=1e-6)


def test_plan_loss_aligns_by_index_among_supervised_tokens() -> None:
    """Slots differ in length, so supervised tokens sit at different absolute positions."""
    v = 7
    sup_lat = torch.randn(2, 3, v, generator=_g(10))  # supervised logits, row-wise
    sup_plan = torch.randn(2, 3, v, generator=_g(11))
    lat = torch.randn(2, 8, v, generator=_g(12)) * 50  # garbage elsewhere
    plan = torch.randn(2, 6, v, generator=_g(13)) * 50
    lat_pos = [[4, 5, 7], [2, 3, 6]]
    plan_pos = [[1, 2, 4], [0, 3, 5]]
    lat_mask = torch.zeros(2, 8, dtype=torch.bool)
    plan_mask = torch.zeros(2, 6, dtype=torch.bool)
    for b in range(2):
        for k in range(3):
            lat[b, lat_pos[b][k]] = sup_lat[b, k]
            plan[b, plan_pos[b][k]] = sup_plan[b, k]
            lat_mask[b, lat_pos[b][k]] = True
            plan_mask[b, plan_pos[b][k]] = True
    got = plan_alignment_loss(lat, plan, lat_mask, plan_mask).item()
    assert got == pytest.approx(_manual_plan(sup_lat, sup_plan), rel=1e-5)


def test_plan_loss_rejects_count_mismatch() -> None:
    lat = torch.randn(1, 4, 5)
    plan = torch.randn(1, 4, 5)
    with pytest.raises(ValueError, match="counts differ"):
        plan_alignment_loss(lat, plan, torch.tensor([[True, True, False, False]]), torch.tensor([[True] * 3 + [False]]))


def test_plan_target_carries_no_gradient() -> None:
    lat = torch.randn(2, 5, 10, generator=_g(14), requires_grad=True)
    plan = torch.randn(2, 5, 10, generator=_g(15), requires_grad=True)
    mask = torch.ones(2, 5, dtype=torch.bool)
    plan_alignment_loss(lat, plan, mask, mask).backward()
    assert plan.grad is None or plan.grad.abs().max().item() == 0.0
    assert lat.grad is not None and lat.grad.abs().sum().item() > 1e-4


def test_plan_loss_empty_mask_is_zero_and_backpropagates() -> None:
    lat = torch.randn(1, 3, 4, requires_grad=True)
    mask = torch.zeros(1, 3, dtype=torch.bool)
    loss = plan_alignment_loss(lat, torch.randn(1, 3, 4), mask, mask)
    assert loss.item() == 0.0
    loss.backward()


# ------------------------------------------------------------------ separation


def test_separation_loss_matches_reference_and_hinges() -> None:
    lat = torch.randn(2, 4, 6, generator=_g(16))
    neg = torch.randn(2, 4, 6, generator=_g(17))
    mask = torch.ones(2, 4, dtype=torch.bool)
    margin = 0.5
    js = _js64(_p64(lat), _p64(neg))
    assert js.max().item() < margin  # so the hinge is active everywhere: the value is informative
    expected = torch.clamp(margin - js, min=0).mean().item()
    assert separation_loss(lat, neg, mask, mask, margin).item() == pytest.approx(expected, rel=1e-5)
    # Far-apart distributions beyond the margin: zero loss.
    far_a = torch.tensor([[[30.0, 0.0, 0.0]]])
    far_b = torch.tensor([[[0.0, 30.0, 0.0]]])
    one = torch.tensor([[True]])
    assert separation_loss(far_a, far_b, one, one, 0.3).item() == 0.0
    # Identical distributions: loss = margin.
    assert separation_loss(lat, lat.clone(), mask, mask, 0.3).item() == pytest.approx(0.3, abs=1e-6)


@pytest.mark.parametrize("margin", [LN2, 0.6932, 0.7, 1.0, -0.1])
def test_margin_at_or_above_ln2_rejected(margin: float) -> None:
    x = torch.randn(1, 2, 3)
    m = torch.ones(1, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="ln 2"):
        separation_loss(x, x, m, m, margin)
    with pytest.raises(ValueError, match="ln 2"):
        LossWeights(margin=margin)


def test_margin_just_below_ln2_accepted() -> None:
    x = torch.randn(1, 2, 3)
    m = torch.ones(1, 2, dtype=torch.bool)
    assert separation_loss(x, x, m, m, 0.69).item() == pytest.approx(0.69, abs=1e-6)


def test_separation_truncates_to_shorter_count() -> None:
    lat = torch.randn(1, 5, 6, generator=_g(18))
    neg = torch.randn(1, 3, 6, generator=_g(19))
    lat_mask = torch.tensor([[False, True, True, True, True]])  # 4 supervised
    neg_mask = torch.tensor([[True, False, True]])  # 2 supervised
    got = separation_loss(lat, neg, lat_mask, neg_mask, 0.6).item()
    js = _js64(_p64(lat[0, [1, 2]]), _p64(neg[0, [0, 2]]))
    assert got == pytest.approx(torch.clamp(0.6 - js, min=0).mean().item(), rel=1e-5)


def test_negative_target_carries_no_gradient() -> None:
    lat = torch.randn(2, 4, 8, generator=_g(20), requires_grad=True)
    neg = torch.randn(2, 4, 8, generator=_g(21), requires_grad=True)
    mask = torch.ones(2, 4, dtype=torch.bool)
    separation_loss(lat, neg, mask, mask, 0.6).backward()
    assert neg.grad is None or neg.grad.abs().max().item() == 0.0
    assert lat.grad is not None and lat.grad.abs().sum().item() > 1e-5


# ------------------------------------------------------------------ negatives


def test_derangement_has_no_fixed_points_and_is_seeded() -> None:
    for n in (2, 3, 5, 10):
        for seed in range(20):
            perm = derangement(n, seed)
            assert sorted(perm) == list(range(n))
            assert all(perm[i] != i for i in range(n))
    assert derangement(2, 0) == [1, 0]
    assert derangement(10, 123) == derangement(10, 123)
    assert len({tuple(derangement(10, s)) for s in range(10)}) > 1
    with pytest.raises(ValueError):
        derangement(1, 0)


def test_negative_latents_list_truncates_and_tiles() -> None:
    h = 4
    items = [torch.full((n, h), float(i)) + torch.arange(n).unsqueeze(1) * 0.01 for i, n in enumerate((5, 2, 3))]
    out = negative_latents(items, 7)
    perm = derangement(3, 7)
    assert out is not None and len(out) == 3
    for i, neg in enumerate(out):
        src = items[perm[i]]
        assert neg.shape == items[i].shape
        assert int(neg[0, 0].item()) == perm[i] != i  # another task's latents
        expected = torch.cat([src] * 3)[: items[i].shape[0]]  # cyclic tiling / truncation
        assert torch.equal(neg, expected)
    again = negative_latents(items, 7)
    assert all(torch.equal(a, b) for a, b in zip(out, again, strict=True))


def test_negative_latents_batched_with_lengths() -> None:
    b, length, h = 3, 4, 2
    x = torch.zeros(b, length, h)
    lens = [4, 2, 3]
    for i in range(b):
        x[i, : lens[i]] = torch.arange(1, lens[i] + 1).unsqueeze(1).float() + 10 * i
    out = negative_latents(x, 3, lengths=lens)
    perm = derangement(3, 3)
    assert out.shape == x.shape
    for i in range(b):
        src = x[perm[i], : lens[perm[i]]]
        expected = torch.cat([src] * 4)[: lens[i]]
        assert torch.equal(out[i, : lens[i]], expected)
        assert torch.equal(out[i, lens[i] :], torch.zeros(length - lens[i], h))


def test_negative_latents_batch_of_one_returns_none() -> None:
    assert negative_latents([torch.randn(3, 4)], 0) is None
    assert negative_latents(torch.randn(1, 3, 4), 0) is None


# ------------------------------------------------------------------ weights


def test_loss_weight_defaults_and_adaptive_off() -> None:
    w = LossWeights()
    assert (w.ce, w.plan, w.neg, w.margin, w.adaptive) == (1.0, 0.5, 0.1, 0.3, False)
    assert w.margin < LN2
    assert {f.name for f in dataclasses.fields(w)} >= {"ce", "plan", "neg", "margin", "adaptive"}
    with pytest.raises(ValueError):
        LossWeights(plan=-1.0)


def test_combine_constant_weights() -> None:
    ce = torch.tensor(2.0, requires_grad=True)
    plan = torch.tensor(0.4, requires_grad=True)
    neg = torch.tensor(0.2, requires_grad=True)
    total, parts = combine(ce, plan, neg, LossWeights())
    assert total.item() == pytest.approx(2.0 + 0.5 * 0.4 + 0.1 * 0.2)
    assert parts == pytest.approx(
        {"ce": 2.0, "plan": 0.4, "neg": 0.2, "w_ce": 1.0, "w_plan": 0.5, "w_neg": 0.1, "total": 2.22}
    )
    assert all(type(v) is float for v in parts.values())
    total.backward()
    assert (ce.grad.item(), plan.grad.item(), neg.grad.item()) == pytest.approx((1.0, 0.5, 0.1))


def test_combine_skips_missing_terms() -> None:
    total, parts = combine(torch.tensor(1.5), None, None, LossWeights())
    assert total.item() == pytest.approx(1.5)
    assert set(parts) == {"ce", "w_ce", "total"}


def test_adaptive_weights_are_detached_floats() -> None:
    w = LossWeights(adaptive=True)
    ce = torch.tensor(2.0, requires_grad=True)
    plan = torch.tensor(0.5, requires_grad=True)
    neg = torch.tensor(0.25, requires_grad=True)
    w_plan, w_neg = w.effective(2.0, 0.5, 0.25)
    assert type(w_plan) is float and type(w_neg) is float
    assert w_plan == pytest.approx(0.5 * 2.0 / 0.5) and w_neg == pytest.approx(0.1 * 2.0 / 0.25)
    total, parts = combine(ce, plan, neg, w)
    assert parts["w_plan"] == pytest.approx(2.0) and parts["w_neg"] == pytest.approx(0.8)
    total.backward()
    # If the weights were in the graph (w = f(loss)), these gradients would differ from w.
    assert plan.grad.item() == pytest.approx(parts["w_plan"])
    assert neg.grad.item() == pytest.approx(parts["w_neg"])
    assert ce.grad.item() == pytest.approx(1.0)
    # The weight stored on the dataclass is unchanged: adaptivity is per step, not cumulative.
    assert w.plan == 0.5 and w.neg == 0.1


def test_adaptive_weights_clamped() -> None:
    w = LossWeights(adaptive=True)
    w_plan, _ = w.effective(1.0, 1e-12, None)
    assert w_plan == pytest.approx(0.5 * 10)
    w_plan, _ = w.effective(1.0, 1e6, None)
    assert w_plan == pytest.approx(0.5 / 10)


# ------------------------------------------------------------------ compression (SPEC 5)


def test_compression_weights_clip_at_95th_percentile_and_mean_normalise() -> None:
    u = torch.cat([torch.arange(19, dtype=torch.float32), torch.tensor([1000.0])])  # 20 values
    w = compression_weights(u)
    # 95th percentile of 0..18, 1000 with linear interpolation: position 0.95 * 19 = 18.05.
    cap = 18.0 + 0.05 * (1000.0 - 18.0)
    clipped = torch.minimum(u, torch.tensor(cap))
    torch.testing.assert_close(w, clipped / clipped.mean(), rtol=1e-5, atol=1e-4)
    assert w.mean().item() == pytest.approx(1.0, abs=1e-6)
    assert w[-1].item() == pytest.approx(cap / clipped.mean().item(), rel=1e-5)
    assert w[-1].item() < 1000.0 / u.mean().item() / 2  # the outlier was really clipped


def test_compression_weights_all_zero_gap_is_uniform() -> None:
    assert torch.equal(compression_weights(torch.zeros(5)), torch.ones(5))


def _tempered_kl64(d: torch.Tensor, a: torch.Tensor, t: float) -> torch.Tensor:
    return _kl64(_p64(d / t), _p64(a / t))


def test_compression_kl_uniform_weights_and_t_squared_scaling() -> None:
    a = torch.randn(2, 6, 10, generator=_g(30))
    d = torch.randn(2, 6, 10, generator=_g(31))
    mask = torch.ones(2, 6, dtype=torch.bool)
    # B == D: no entropy gap, weights uniform -> plain mean of T^2 * KL(p_D^T || p_A^T).
    for t in (1.0, 4.0):
        got = compression_kl_loss(a, d, d.clone(), mask, T=t).item()
        expected = (t * t * _tempered_kl64(d, a, t)).mean().item()
        assert got == pytest.approx(expected, rel=1e-4)
    default = compression_kl_loss(a, d, d.clone(), mask).item()
    assert default == pytest.approx((16.0 * _tempered_kl64(d, a, 4.0)).mean().item(), rel=1e-4)
    # Direction: KL(p_D || p_A), not KL(p_A || p_D).
    wrong = (16.0 * _kl64(_p64(a / 4), _p64(d / 4))).mean().item()
    assert abs(default - wrong) > 1e-3


def test_compression_kl_entropy_gap_weights() -> None:
    v = 6
    a = torch.randn(1, 4, v, generator=_g(32))
    d = torch.randn(1, 4, v, generator=_g(33)) * 3
    b = torch.randn(1, 4, v, generator=_g(34)) * 0.1  # flat: high entropy without a message
    mask = torch.ones(1, 4, dtype=torch.bool)
    hb, hd = entropy(b[0]).double(), entropy(d[0]).double()
    u = torch.clamp(hb - hd, min=0)
    assert (u > 0).sum() >= 2
    cap = torch.quantile(u, 0.95)
    w = torch.minimum(u, cap)
    w = w / w.mean()
    klt = 16.0 * _tempered_kl64(d[0], a[0], 4.0)
    expected = ((w * klt).sum() / w.sum()).item()
    assert compression_kl_loss(a, d, b, mask).item() == pytest.approx(expected, rel=1e-4)
    # Where B is more confident than D, u = 0: that token gets zero weight.
    b2 = b.clone()
    b2[0, 0] = d[0, 0] * 100  # nearly one-hot: H(p_B) < H(p_D)
    u2 = torch.clamp(entropy(b2[0]).double() - hd, min=0)
    assert u2[0].item() == 0.0
    w2 = torch.minimum(u2, torch.quantile(u2, 0.95))
    expected2 = ((w2 * klt).sum() / w2.sum()).item()
    assert compression_kl_loss(a, d, b2, mask).item() == pytest.approx(expected2, rel=1e-4)


def test_compression_kl_only_first_64_supervised_tokens() -> None:
    n, v = 70, 5
    a = torch.randn(1, n + 2, v, generator=_g(35))
    d = torch.randn(1, n + 2, v, generator=_g(36))
    b = torch.randn(1, n + 2, v, generator=_g(37))
    mask = torch.ones(1, n + 2, dtype=torch.bool)
    mask[0, :2] = False  # the slot / prompt
    base = compression_kl_loss(a, d, b, mask).item()
    a2 = a.clone()
    a2[0, 2 + 64 :] = torch.randn(n - 64, v, generator=_g(38)) * 10  # beyond the first 64
    assert compression_kl_loss(a2, d, b, mask).item() == pytest.approx(base, rel=1e-6)
    a3 = a.clone()
    a3[0, 2 + 63] = a3[0, 2 + 63] * 10  # the 64th supervised token counts
    assert compression_kl_loss(a3, d, b, mask).item() != pytest.approx(base, rel=1e-6)


def test_compression_kl_per_pass_masks() -> None:
    v = 5
    core_a = torch.randn(1, 3, v, generator=_g(39))
    core_d = torch.randn(1, 3, v, generator=_g(40))
    core_b = torch.randn(1, 3, v, generator=_g(41))
    # Different slot lengths: A has 2 prefix positions, D has 5, B has 0.
    a = torch.cat([torch.randn(1, 2, v), core_a], 1)
    d = torch.cat([torch.randn(1, 5, v), core_d], 1)
    masks = (
        torch.tensor([[False] * 2 + [True] * 3]),
        torch.tensor([[False] * 5 + [True] * 3]),
        torch.ones(1, 3, dtype=torch.bool),
    )
    got = compression_kl_loss(a, d, core_b, masks).item()
    ref = compression_kl_loss(core_a, core_d, core_b, torch.ones(1, 3, dtype=torch.bool)).item()
    assert got == pytest.approx(ref, rel=1e-6)


def test_compression_kl_gradient_only_to_student_pass() -> None:
    a = torch.randn(2, 4, 7, generator=_g(42), requires_grad=True)
    d = torch.randn(2, 4, 7, generator=_g(43), requires_grad=True)
    b = torch.randn(2, 4, 7, generator=_g(44), requires_grad=True)
    compression_kl_loss(a, d, b, torch.ones(2, 4, dtype=torch.bool)).backward()
    assert a.grad is not None and a.grad.abs().sum().item() > 1e-5
    for t in (d, b):
        assert t.grad is None or t.grad.abs().max().item() == 0.0


def test_align_loss() -> None:
    m = torch.randn(9, 16, generator=_g(45))
    mean = m.mean(0)
    z_same_mean = torch.stack([mean + 0.5, mean - 0.5, mean])  # different rows, same mean
    assert align_loss(z_same_mean, m).item() == pytest.approx(0.0, abs=1e-6)
    assert align_loss(-mean.expand(4, 16), m).item() == pytest.approx(2.0, abs=1e-5)
    e0 = torch.zeros(2, 16)
    e0[:, 0] = 1.0
    e1 = torch.zeros(3, 16)
    e1[:, 1] = 5.0
    assert align_loss(e0, e1).item() == pytest.approx(1.0, abs=1e-6)
    # Padding rows of M are excluded from its mean.
    padded = torch.cat([e1, 100 * e0[:1]]).unsqueeze(0)
    pad = torch.tensor([[False, False, False, True]])
    assert align_loss(e0.unsqueeze(0), padded, pad).item() == pytest.approx(1.0, abs=1e-6)
    assert align_loss(e0.unsqueeze(0), padded).item() < 0.5  # the mask mattered
    z = torch.randn(3, 16, generator=_g(46), requires_grad=True)
    mm = m.clone().requires_grad_(True)
    align_loss(z, mm).backward()
    assert z.grad.abs().sum().item() > 0
    assert mm.grad is None


# ------------------------------------------------------------------ curriculum


def test_schedule_rises_and_reaches_pure_latents_for_final_part() -> None:
    c = Curriculum()
    assert (c.mode, c.r_start, c.pure_from) == ("schedule", 0.1, 0.7)
    total = 100
    rs = [c.ratio(s, total) for s in range(total)]
    assert rs[0] == pytest.approx(0.1)
    assert all(b >= a for a, b in zip(rs, rs[1:], strict=False))
    assert rs[35] == pytest.approx(0.1 + 0.9 * 0.5)
    assert all(r < 1.0 for r in rs[:70])
    assert all(r == 1.0 for r in rs[70:])  # final 30% of training is pure latents
    assert sum(r == 1.0 for r in rs) == 30


def test_schedule_short_runs_and_validation() -> None:
    c = Curriculum(r_start=0.0, pure_from=0.5)
    assert [c.ratio(s, 4) for s in range(4)] == pytest.approx([0.0, 0.5, 1.0, 1.0])
    assert Curriculum(pure_from=0.0).ratio(0, 10) == 1.0
    assert Curriculum().ratio(0, 1) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        Curriculum(pure_from=1.0)
    with pytest.raises(ValueError):
        Curriculum(mode="nope")
    with pytest.raises(ValueError):
        Curriculum().ratio(-1, 10)


def test_reference_mode_never_pure_and_seeded() -> None:
    c = Curriculum("reference", seed=3)
    rs = [c.ratio(s, 1000) for s in range(1000)]
    assert all(r in REFERENCE_CHOICES for r in rs)
    assert max(rs) == pytest.approx(0.9) and 1.0 not in rs
    assert set(rs) == set(REFERENCE_CHOICES)  # uniform over all nine values
    counts = [rs.count(v) for v in REFERENCE_CHOICES]
    assert min(counts) > 70 and max(counts) < 155  # ~111 each
    assert rs == [Curriculum("reference", seed=3).ratio(s, 1000) for s in range(1000)]
    assert rs != [Curriculum("reference", seed=4).ratio(s, 1000) for s in range(1000)]
    # Per-step determinism: order of calls does not matter (resumable).
    assert c.ratio(500, 1000) == rs[500]


def test_pure_mode() -> None:
    c = Curriculum("pure")
    assert all(c.ratio(s, 50) == 1.0 for s in range(50))


def test_mix_slot_shapes_and_ordering() -> None:
    lat = torch.arange(10, dtype=torch.float32).unsqueeze(1).repeat(1, 3)  # rows 0..9
    plan = 100 + torch.arange(8, dtype=torch.float32).unsqueeze(1).repeat(1, 3)  # rows 100..107
    mixed = mix_slot(lat, plan, 0.3)  # 3 latent rows, then plan rows from round(2.4) = 2
    assert mixed.shape == (3 + 6, 3)
    assert mixed[:, 0].tolist() == [0, 1, 2, 102, 103, 104, 105, 106, 107]
    assert torch.equal(mix_slot(lat, plan, 1.0), lat)
    assert torch.equal(mix_slot(lat, plan, 0.0), plan)
    half = mix_slot(lat[:5], plan[:5], 0.5)  # round half up: 3 latent rows, plan tail from 3
    assert half[:, 0].tolist() == [0, 1, 2, 103, 104]
    with pytest.raises(ValueError):
        mix_slot(lat, plan, 1.5)
    with pytest.raises(ValueError):
        mix_slot(lat, plan[:, :2], 0.5)


def test_mix_slot_casts_plan_dtype_and_keeps_gradient() -> None:
    lat = torch.randn(4, 6, requires_grad=True)
    plan = torch.randn(5, 6, dtype=torch.float64)
    out = mix_slot(lat, plan, 0.5)
    assert out.dtype == torch.float32 and out.shape == (2 + 2, 6)
    out.sum().backward()
    assert lat.grad[:2].abs().sum().item() > 0 and lat.grad[2:].abs().sum().item() == 0


def test_round_half_up() -> None:
    assert [round_half_up(x) for x in (0.5, 1.5, 2.5, 2.4999, 0.7 * 10, 0.3 * 5)] == [1, 2, 3, 2, 7, 2]
