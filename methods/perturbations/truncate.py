"""truncate (rho): the first ceil(rho * L) rows of the message, no retraining.

rho = 0 sends no rows: the receiver reads an empty slot (``<bop><eop>``), as `no_comm` does,
but with the receiver trained on latents.
"""

from __future__ import annotations

import math

from interlat_bench.harness.core.params import UNIT_INTERVAL
from interlat_bench.harness.core.registry import register_method
from interlat_bench.methods.perturbations.base import LatentPerturbation


def kept_rows(rho: float, rows: int) -> int:
    """ceil(rho * L), immune to float error (0.7 * 10 is 7.000000000000001, which is 7 rows)."""
    return min(rows, math.ceil(round(rho * rows, 9)))


def truncate(m, rho: float):
    return m[: kept_rows(rho, m.shape[0])]


@register_method
class Truncate(LatentPerturbation):
    name = "truncate"
    description = "latent receiver reads the first ceil(rho * L) rows (paper: rho = 0.9, 0.5, 0)"
    defaults = {**LatentPerturbation.defaults, "rho": 0.5}
    param_checks = {**LatentPerturbation.param_checks, "rho": UNIT_INTERVAL}
    sweep = {"rho": (0.9, 0.5, 0.0)}

    def perturb(self, m, rng):
        return truncate(m, float(self.params["rho"]))
