"""Latent/plan mixing curriculum for receiver training (SPEC section 4).

The slot holds the first round(r*L) latent rows followed by the plan-embedding tail from
round(r*L_plan). Modes for r:

* "schedule" (default, ours): r rises linearly from `r_start` at step 0 to 1.0 at
  `pure_from * total_steps` and stays exactly 1.0 (pure latents) for the rest of training,
  so the receiver is trained on the message form it is evaluated on.
* "reference": the public code's behaviour, r uniform on {0.1, 0.2, ..., 0.9}; it never
  yields 1.0 (pure latents). Seeded and deterministic per step: the draw for a step depends
  only on (seed, step), so a resumed run sees the same sequence.
* "pure": always 1.0.

Rounding: round(x) here is round-half-up (floor(x + 0.5)), not Python's banker's rounding, so
e.g. r = 0.5 of 5 rows keeps 3 latent rows.
"""

from __future__ import annotations

import math
import random

import torch

__all__ = ["Curriculum", "MODES", "REFERENCE_CHOICES", "round_half_up", "mix_slot"]

MODES = ("schedule", "reference", "pure")
REFERENCE_CHOICES: tuple[float, ...] = tuple(round(0.1 * k, 1) for k in range(1, 10))


def round_half_up(x: float) -> int:
    # A tiny epsilon absorbs float noise such as 0.7 * 10 = 7.000000000000001 or 0.3 * 5 = 1.4999999999999998.
    return int(math.floor(x + 0.5 + 1e-9))


class Curriculum:
    """r (fraction of the slot taken by latent rows) as a function of the training step."""

    def __init__(
        self,
        mode: str = "schedule",
        r_start: float = 0.1,
        pure_from: float = 0.7,
        seed: int = 0,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown curriculum mode {mode!r}; expected one of {MODES}")
        if not 0.0 <= r_start <= 1.0:
            raise ValueError(f"r_start must be in [0, 1], got {r_start}")
        if not 0.0 <= pure_from < 1.0:
            # pure_from = 1 would reach pure latents only after the last step.
            raise ValueError(f"pure_from must be in [0, 1), got {pure_from}")
        self.mode = mode
        self.r_start = float(r_start)
        self.pure_from = float(pure_from)
        self.seed = int(seed)

    def __repr__(self) -> str:
        return (
            f"Curriculum(mode={self.mode!r}, r_start={self.r_start}, "
            f"pure_from={self.pure_from}, seed={self.seed})"
        )

    def ratio(self, step: int, total_steps: int) -> float:
        """r for 0-based `step` out of `total_steps` optimizer steps."""
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if self.mode == "pure":
            return 1.0
        if self.mode == "reference":
            # String seeds hash with SHA-512 inside random.Random: stable across runs/processes.
            return random.Random(f"interlat-curriculum:{self.seed}:{step}").choice(REFERENCE_CHOICES)
        ramp_end = self.pure_from * total_steps
        if step >= ramp_end:
            return 1.0
        return self.r_start + (1.0 - self.r_start) * (step / ramp_end)


def mix_slot(latent_rows: torch.Tensor, plan_embeds: torch.Tensor, r: float) -> torch.Tensor:
    """cat(latent_rows[:round(r*L)], plan_embeds[round(r*L_plan):]) along rows.

    latent_rows: (L, H) adapted latents (receiver space); plan_embeds: (L_plan, H) receiver
    token embeddings of the plan text. r = 1 gives pure latents, r = 0 pure plan embeddings.
    The plan tail is cast to the latents' dtype/device."""
    if not 0.0 <= r <= 1.0:
        raise ValueError(f"r must be in [0, 1], got {r}")
    if latent_rows.dim() != 2 or plan_embeds.dim() != 2:
        raise ValueError(
            f"expected 2-D (rows, H) tensors, got {tuple(latent_rows.shape)} and {tuple(plan_embeds.shape)}"
        )
    if latent_rows.shape[1] != plan_embeds.shape[1]:
        raise ValueError(f"hidden sizes differ: {latent_rows.shape[1]} vs {plan_embeds.shape[1]}")
    n_lat = round_half_up(r * latent_rows.shape[0])
    n_plan_skip = round_half_up(r * plan_embeds.shape[0])
    tail = plan_embeds[n_plan_skip:].to(dtype=latent_rows.dtype, device=latent_rows.device)
    return torch.cat([latent_rows[:n_lat], tail], dim=0)
