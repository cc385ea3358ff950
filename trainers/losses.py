"""Losses for training the Interlat receiver (SPEC section 4) and the compressed sender (section 5).

Conventions
-----------
* Logits are (B, T, V) (a single sequence (T, V) is accepted too). Everything is computed in
  float32 from log-softmax, in log space where it matters.
* Supervision masks are (B, T) bool with True = "this position's logits are scored". They mark
  the positions whose logits predict a supervised label (i.e. already shifted by the caller).
  The receiver's passes with different slots (latents, plan text, another task's latents, no
  message) have their supervised tokens at different absolute positions; they are paired by
  their index among supervised tokens: the k-th True of one mask pairs with the k-th True of
  the other, row by row.
* Targets (p_plan, p_neg, p_D, p_B) are detached inside the loss functions: gradients never
  reach them, whatever the caller passes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "LN2",
    "kl",
    "js_divergence",
    "entropy",
    "plan_alignment_loss",
    "separation_loss",
    "derangement",
    "negative_latents",
    "LossWeights",
    "combine",
    "compression_weights",
    "compression_kl_loss",
    "align_loss",
]

LN2 = math.log(2.0)
_LOG_FLOOR = -1e30


# ---------------------------------------------------------------------------- divergences


def _log_probs(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    x = logits.float()
    if temperature != 1.0:
        x = x / temperature
    return F.log_softmax(x, dim=-1)


def _kl_logp(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(p||q) = sum_v p (log p - log q) over the last dim, from log-probabilities.

    Terms with p = 0 count as 0 (0 log 0 = 0) without producing NaN values or NaN gradients,
    which matters when a logit is -inf (masked vocabulary entries)."""
    p = logp.exp()
    support = p > 0
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    diff = torch.where(support, logp, zero) - torch.where(support, logq, zero)
    return (p * diff).sum(dim=-1)


def kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per position (reduces the last, vocabulary, dim), from logits, in float32."""
    return _kl_logp(_log_probs(p_logits), _log_probs(q_logits))


def _js_logp(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    # log m = log((p + q) / 2) = logsumexp(log p, log q) - ln 2, stable in log space.
    # -inf log-probs (masked vocabulary) are floored to a huge finite negative number first:
    # logaddexp(-inf, -inf) has a NaN gradient, while exp(-1e30) is exactly 0 all the same.
    logm = torch.logaddexp(logp.clamp_min(_LOG_FLOOR), logq.clamp_min(_LOG_FLOOR)) - LN2
    js = 0.5 * _kl_logp(logp, logm) + 0.5 * _kl_logp(logq, logm)
    # JS >= 0 mathematically; only rounding can make it slightly negative. No upper clamp: the
    # ln 2 bound holds by construction (KL(p||m) <= ln 2 since m >= p/2), tests check it.
    return js.clamp_min(0.0)


def js_divergence(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """True Jensen-Shannon divergence per position: 0.5*KL(p||m) + 0.5*KL(q||m), m = (p+q)/2.

    Symmetric, 0 for identical distributions, and bounded by ln 2 (reached for disjoint
    supports). Both arguments keep their gradients; callers detach targets."""
    return _js_logp(_log_probs(p_logits), _log_probs(q_logits))


def entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Shannon entropy (nats) of softmax(logits / temperature) per position."""
    logp = _log_probs(logits, temperature)
    p = logp.exp()
    return -(torch.where(p > 0, p * logp, torch.zeros_like(p))).sum(dim=-1)


# ---------------------------------------------------------------------------- alignment


def _as_batched(logits: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if logits.dim() == 2:
        logits = logits.unsqueeze(0)
        mask = mask.unsqueeze(0)
    if logits.dim() != 3:
        raise ValueError(f"logits must be (B, T, V) or (T, V), got {tuple(logits.shape)}")
    if mask.shape != logits.shape[:2]:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match logits {tuple(logits.shape)}")
    return logits, mask.to(device=logits.device, dtype=torch.bool)


def _first_n(mask: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Keep only the first n[b] True entries of each row of `mask`."""
    rank = mask.long().cumsum(dim=1) - 1
    return mask & (rank < n.unsqueeze(1))


def _aligned(
    a_logits: torch.Tensor,
    a_mask: torch.Tensor,
    b_logits: torch.Tensor,
    b_mask: torch.Tensor,
    *,
    truncate: bool,
    limit: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pair supervised positions of two passes by their index among supervised tokens.

    Returns (a_sel (N, V), b_sel (N, V), row_of_each (N,)), rows in batch order and positions in
    sequence order. With truncate=False the per-row counts must match."""
    a_logits, a_mask = _as_batched(a_logits, a_mask)
    b_logits, b_mask = _as_batched(b_logits, b_mask)
    if a_logits.shape[0] != b_logits.shape[0]:
        raise ValueError(f"batch sizes differ: {a_logits.shape[0]} vs {b_logits.shape[0]}")
    if a_logits.shape[-1] != b_logits.shape[-1]:
        raise ValueError(f"vocabulary sizes differ: {a_logits.shape[-1]} vs {b_logits.shape[-1]}")
    na, nb = a_mask.sum(dim=1), b_mask.to(a_mask.device).sum(dim=1)
    if not truncate and not torch.equal(na, nb):
        raise ValueError(
            f"supervised token counts differ per row: {na.tolist()} vs {nb.tolist()}"
        )
    n = torch.minimum(na, nb)
    if limit is not None:
        n = n.clamp_max(limit)
    a_keep = _first_n(a_mask, n)
    b_keep = _first_n(b_mask, n.to(b_mask.device))
    rows = torch.arange(a_mask.shape[0], device=a_mask.device).unsqueeze(1).expand_as(a_mask)
    return a_logits[a_keep], b_logits[b_keep], rows[a_keep]


def _zero_like_graph(t: torch.Tensor) -> torch.Tensor:
    # A 0 that stays connected to the graph, so .backward() works when nothing is supervised.
    return t.float().sum() * 0.0


def plan_alignment_loss(
    lat_logits: torch.Tensor,
    plan_logits: torch.Tensor,
    lat_mask: torch.Tensor,
    plan_mask: torch.Tensor,
    kl_weight: float = 0.7,
    cos_weight: float = 0.3,
) -> torch.Tensor:
    """L_plan = mean over supervised positions of 0.7*KL(p_plan || p_lat) + 0.3*(1 - cos(p_lat, p_plan)).

    p_plan (the pass with plan-text embeddings in the slot) is detached here. Positions are
    paired by index among supervised tokens; per-row counts must be equal (same conversation)."""
    lat, plan, _ = _aligned(lat_logits, lat_mask, plan_logits, plan_mask, truncate=False)
    if lat.shape[0] == 0:
        return _zero_like_graph(lat_logits)
    logp_lat = _log_probs(lat)
    logp_plan = _log_probs(plan.detach())
    kl_term = _kl_logp(logp_plan, logp_lat)  # KL(p_plan || p_lat): target first
    cos = F.cosine_similarity(logp_lat.exp(), logp_plan.exp(), dim=-1, eps=1e-8)
    return (kl_weight * kl_term + cos_weight * (1.0 - cos)).mean()


def separation_loss(
    lat_logits: torch.Tensor,
    neg_logits: torch.Tensor,
    lat_mask: torch.Tensor,
    neg_mask: torch.Tensor,
    margin: float,
) -> torch.Tensor:
    """L_neg = mean(max(0, margin - JS(p_lat, p_neg))) over aligned supervised positions.

    p_neg (another task's latents in the slot) is detached here. If the per-row counts of
    supervised positions differ, each row is truncated to the shorter one. JS <= ln 2, so a
    margin >= ln 2 could never be met and is rejected."""
    _check_margin(margin)
    lat, neg, _ = _aligned(lat_logits, lat_mask, neg_logits, neg_mask, truncate=True)
    if lat.shape[0] == 0:
        return _zero_like_graph(lat_logits)
    js = _js_logp(_log_probs(lat), _log_probs(neg.detach()))
    return F.relu(margin - js).mean()


def _check_margin(margin: float) -> None:
    if not 0.0 <= margin < LN2:
        raise ValueError(
            f"margin must be in [0, ln 2 = {LN2:.4f}): the Jensen-Shannon divergence never "
            f"exceeds ln 2, got {margin}"
        )


# ---------------------------------------------------------------------------- negatives


def _generator(rng: torch.Generator | int | None) -> torch.Generator:
    if isinstance(rng, torch.Generator):
        return rng
    g = torch.Generator()
    g.manual_seed(0 if rng is None else int(rng))
    return g


def derangement(n: int, rng: torch.Generator | int | None = None) -> list[int]:
    """A seeded uniformly random permutation of range(n) with no fixed point (n >= 2).

    Rejection sampling over torch.randperm (expected ~e draws). `rng` is a torch.Generator
    (advanced in place) or an int seed."""
    if n < 2:
        raise ValueError(f"a derangement needs n >= 2, got {n}")
    g = _generator(rng)
    while True:
        perm = torch.randperm(n, generator=g)
        if not bool((perm == torch.arange(n)).any()):
            return perm.tolist()


def _fit_rows(src: torch.Tensor, length: int) -> torch.Tensor:
    """Truncate or tile `src` (L_src, H) to exactly `length` rows."""
    if length == 0:
        return src[:0]
    if src.shape[0] == 0:
        raise ValueError("cannot tile an empty message to a non-empty length")
    if src.shape[0] >= length:
        return src[:length]
    reps = -(-length // src.shape[0])
    return src.repeat(reps, 1)[:length]


def negative_latents(
    latents: Sequence[torch.Tensor] | torch.Tensor,
    rng: torch.Generator | int | None = None,
    lengths: Sequence[int] | torch.Tensor | None = None,
) -> list[torch.Tensor] | torch.Tensor | None:
    """For each message of a batch, another message of the same batch, fitted to its length.

    The source of item i is item perm[i] for a seeded derangement perm (never itself); it is
    truncated or tiled (rows repeated cyclically) to item i's length.

    `latents` is either a list of (L_i, H) tensors (returns a list) or a padded (B, L, H) tensor
    with optional `lengths` (B,) of valid rows (returns (B, L, H), rows past lengths[i] zero).

    With a batch of one there is no other task to take latents from: returns None and the
    caller skips L_neg for that step (gathering across ranks is the caller's business)."""
    if isinstance(latents, torch.Tensor):
        if latents.dim() != 3:
            raise ValueError(f"batched latents must be (B, L, H), got {tuple(latents.shape)}")
        bsz, max_len, _ = latents.shape
        lens = [max_len] * bsz if lengths is None else [int(x) for x in lengths]
        if len(lens) != bsz or any(not 0 <= x <= max_len for x in lens):
            raise ValueError(f"lengths {lens} do not fit a batch of shape {tuple(latents.shape)}")
        if bsz < 2:
            return None
        perm = derangement(bsz, rng)
        out = torch.zeros_like(latents)
        for i, j in enumerate(perm):
            out[i, : lens[i]] = _fit_rows(latents[j, : lens[j]], lens[i])
        return out
    items = list(latents)
    if len(items) < 2:
        return None
    perm = derangement(len(items), rng)
    return [_fit_rows(items[j], items[i].shape[0]) for i, j in enumerate(perm)]


# ---------------------------------------------------------------------------- weights


@dataclass
class LossWeights:
    """Loss = ce * CE + plan * L_plan + neg * L_neg (SPEC section 4).

    Defaults (our choice; the paper's exact values are not restated in SPEC):
    * plan = 0.5: L_plan is a regulariser towards the text-conditioned behaviour; it starts at
      O(0.1-1) nats, comparable to CE, so half weight keeps it visible without letting the
      receiver ignore the latents in favour of imitating the text pass.
    * neg = 0.1 and margin = 0.3: the hinge is at most `margin`, so L_neg adds at most 0.03 to the
      loss: a gentle push to make the output depend on *which* message was sent. 0.3 is ~43%
      of the JS bound ln 2 = 0.693: clearly different distributions, but reachable (a margin
      near ln 2 would demand disjoint predictions and never switch off).
    * adaptive = False: when True, `combine` rescales plan/neg so that each contributes about
      `weight * CE` (w_eff = w * CE / L, clamped to [w/10, 10w]) computed from DETACHED python
      floats: the effective weights never carry gradient (unlike the public code, whose
      loss-dependent weights stay in the autograd graph and are always on).
    """

    ce: float = 1.0
    plan: float = 0.5
    neg: float = 0.1
    margin: float = 0.3
    adaptive: bool = False
    adaptive_clamp: float = 10.0
    # CE on the plan-text pass (TrainConfig.plan_ce_weight); 0 = off, the SPEC's loss.
    plan_ce: float = 0.0

    def __post_init__(self) -> None:
        for name in ("ce", "plan", "neg", "plan_ce"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"loss weight {name} must be finite and >= 0, got {value}")
        _check_margin(self.margin)
        if self.adaptive_clamp < 1:
            raise ValueError(f"adaptive_clamp must be >= 1, got {self.adaptive_clamp}")

    def effective(self, ce: float, plan: float | None, neg: float | None) -> tuple[float, float]:
        """(w_plan, w_neg) for this step as python floats (from detached loss values)."""
        w_plan, w_neg = float(self.plan), float(self.neg)
        if not self.adaptive:
            return w_plan, w_neg

        def rescale(w: float, value: float | None) -> float:
            if value is None or w == 0.0 or not math.isfinite(ce) or ce <= 0:
                return w
            factor = ce / max(abs(value), 1e-8)
            factor = min(max(factor, 1.0 / self.adaptive_clamp), self.adaptive_clamp)
            return w * factor

        return rescale(w_plan, plan), rescale(w_neg, neg)


def _scalar(x: torch.Tensor | float | None) -> float | None:
    if x is None:
        return None
    return float(x.detach().float().item()) if isinstance(x, torch.Tensor) else float(x)


def combine(
    ce: torch.Tensor,
    plan: torch.Tensor | None,
    neg: torch.Tensor | None,
    weights: LossWeights,
    plan_ce: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """total = w_ce*ce + w_plan*plan + w_neg*neg + w_plan_ce*plan_ce (None terms skipped), plus a
    dict of floats for logging: ce, plan, neg, plan_ce (when present), their weights, total.
    Weights are python floats."""
    ce_v = float(ce.detach().float().item())
    plan_v, neg_v = _scalar(plan), _scalar(neg)
    w_plan, w_neg = weights.effective(ce_v, plan_v, neg_v)
    w_ce = float(weights.ce)
    total = w_ce * ce
    parts: dict[str, float] = {"ce": ce_v, "w_ce": w_ce}
    if plan is not None and plan_v is not None:
        total = total + w_plan * plan
        parts.update(plan=plan_v, w_plan=w_plan)
    if neg is not None and neg_v is not None:
        total = total + w_neg * neg
        parts.update(neg=neg_v, w_neg=w_neg)
    if plan_ce is not None and weights.plan_ce > 0:
        total = total + float(weights.plan_ce) * plan_ce
        parts.update(plan_ce=float(plan_ce.detach().float().item()), w_plan_ce=float(weights.plan_ce))
    parts["total"] = float(total.detach().float().item())
    return total, parts


# ---------------------------------------------------------------------------- compression (SPEC 5)


def compression_weights(u: torch.Tensor, quantile: float = 0.95) -> torch.Tensor:
    """Token weights from entropy gaps u (1-D, >= 0): clip at the `quantile` percentile
    (linear interpolation), then w = u / mean(u); if mean(u) == 0 all weights are 1."""
    u = u.detach().float().clamp_min(0.0)
    if u.numel() == 0:
        return u
    cap = torch.quantile(u, quantile)
    u = torch.minimum(u, cap)
    mean = u.mean()
    if not bool(mean > 0):
        return torch.ones_like(u)
    return u / mean


def compression_kl_loss(
    logits_A: torch.Tensor,
    logits_D: torch.Tensor,
    logits_B: torch.Tensor,
    mask: torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    T: float = 4.0,
    first: int = 64,
) -> torch.Tensor:
    """L_KL = sum_t w_t T^2 KL(p_D^T || p_A^T) / sum_t w_t  (SPEC section 5).

    A = receiver with the student's K latents (gradient flows), D = with the full collected
    latents (detached here), B = with no message (detached here). Per sequence, over the
    first `first` supervised tokens: u_t = ReLU(H(p_B,t) - H(p_D,t)) with entropies at
    temperature 1 (the receiver's actual predictive uncertainty), clipped at its 95th
    percentile, w_t = u_t / mean(u) (uniform if u is all 0). p^T = softmax(logits / T).
    The result is the mean over sequences that have supervised tokens.

    `mask` is one (B, T) mask shared by the three passes (logits already aligned), or a tuple
    (mask_A, mask_D, mask_B), each pass paired by index among its supervised tokens (per-row
    counts must match)."""
    if T <= 0:
        raise ValueError(f"temperature must be > 0, got {T}")
    if first < 1:
        raise ValueError(f"first must be >= 1, got {first}")
    mask_A, mask_D, mask_B = mask if isinstance(mask, tuple) else (mask, mask, mask)
    a_sel, d_sel, rows = _aligned(logits_A, mask_A, logits_D, mask_D, truncate=False, limit=first)
    a_sel2, b_sel, _ = _aligned(logits_A, mask_A, logits_B, mask_B, truncate=False, limit=first)
    del a_sel2
    if a_sel.shape[0] == 0:
        return _zero_like_graph(logits_A)
    d_sel, b_sel = d_sel.detach(), b_sel.detach()
    with torch.no_grad():
        u = F.relu(entropy(b_sel) - entropy(d_sel))
    kl_t = _kl_logp(_log_probs(d_sel, T), _log_probs(a_sel, T)) * (T * T)
    per_seq = []
    for row in torch.unique(rows):
        sel = rows == row
        w = compression_weights(u[sel]).to(kl_t.device)
        per_seq.append((w * kl_t[sel]).sum() / w.sum())
    return torch.stack(per_seq).mean()


def align_loss(
    Z: torch.Tensor, M: torch.Tensor, m_padding_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """L_align = 1 - cos(mean_k Z, mean_rows M), averaged over the batch.

    Z: student latents (K, H) or (B, K, H) (gradient flows). M: collected latents (L, H) or
    (B, L, H), detached here; `m_padding_mask` (B, L) True = padding row of M (excluded)."""
    if Z.dim() == 2:
        Z = Z.unsqueeze(0)
    if M.dim() == 2:
        M = M.unsqueeze(0)
        if m_padding_mask is not None:
            m_padding_mask = m_padding_mask.unsqueeze(0)
    if Z.dim() != 3 or M.dim() != 3 or Z.shape[0] != M.shape[0] or Z.shape[-1] != M.shape[-1]:
        raise ValueError(f"incompatible shapes Z {tuple(Z.shape)} and M {tuple(M.shape)}")
    M = M.detach().float()
    if m_padding_mask is None:
        m_mean = M.mean(dim=1)
    else:
        keep = (~m_padding_mask.to(device=M.device, dtype=torch.bool)).unsqueeze(-1).float()
        m_mean = (M * keep).sum(dim=1) / keep.sum(dim=1).clamp_min(1.0)
    z_mean = Z.float().mean(dim=1)
    return (1.0 - F.cosine_similarity(z_mean, m_mean, dim=-1, eps=1e-8)).mean()
