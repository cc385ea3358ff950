"""whitenoise: M + N(0, sigma^2 I), isotropic noise added to every entry.

sigma: a number, or None (the default) for the noise power matched to the message itself,
sigma^2 = tr(Sigma_hat) / H, the mean per-dimension variance of the rows about their mean.
The matched noise then has the same expected total power as covnoise with a = 1; the two
rows differ only in the noise's shape (white against shaped like the message).
"""

from __future__ import annotations

from interlat_bench.harness.core.params import OPTIONAL_POSITIVE_FLOAT
from interlat_bench.harness.core.registry import register_method
from interlat_bench.methods.perturbations.base import LatentPerturbation, centre, normal


def matched_sigma(m):
    """sqrt(tr(Sigma_hat) / H); 0 for a one-row message (no sample covariance)."""
    t, h = m.shape
    if t < 2:
        return 0.0
    _, x = centre(m)
    return float(((x * x).sum() / (t - 1) / h).sqrt())


def whitenoise(m, rng, sigma: float | None = None):
    s = matched_sigma(m) if sigma is None else float(sigma)
    return m + s * normal(tuple(m.shape), rng, m)


@register_method
class WhiteNoise(LatentPerturbation):
    name = "whitenoise"
    description = "latent receiver reads M + N(0, sigma^2 I) (sigma null: matched to the message's variance)"
    defaults = {**LatentPerturbation.defaults, "sigma": None}
    param_checks = {**LatentPerturbation.param_checks, "sigma": OPTIONAL_POSITIVE_FLOAT}

    def perturb(self, m, rng):
        return whitenoise(m, rng, self.params["sigma"])
