"""Noise with the message's own covariance: covnoise (added), covgauss0 and covgauss_mu (replacing).

Sigma_hat = X^T X / (T - 1) with X = M - mu_hat (T rows). A draw from N(0, Sigma_hat) is
Z X / sqrt(T - 1) with Z ~ N(0, I_TxT) (``base.covariance_draw``).
- covnoise (a): M + a * eps, eps ~ N(0, Sigma_hat): the message, blurred along its own directions;
- covgauss0: rows ~ N(0, Sigma_hat): the second moments without the mean or any row's content;
- covgauss_mu: the same plus mu_hat: mean and covariance kept, content gone.
"""

from __future__ import annotations

from interlat_bench.harness.core.params import POSITIVE_NUMBER
from interlat_bench.harness.core.registry import register_method
from interlat_bench.methods.perturbations.base import LatentPerturbation, centre, covariance_draw


def covnoise(m, rng, a: float):
    _, x = centre(m)
    return m + a * covariance_draw(x, rng)


def covgauss(m, rng, keep_mean: bool):
    mu, x = centre(m)
    draw = covariance_draw(x, rng)
    return draw + mu if keep_mean else draw


@register_method
class CovNoise(LatentPerturbation):
    name = "covnoise"
    description = "latent receiver reads M + a * eps, eps ~ N(0, Sigma_hat) (paper: a = 0.5, 1.0)"
    defaults = {**LatentPerturbation.defaults, "a": 1.0}
    param_checks = {**LatentPerturbation.param_checks, "a": POSITIVE_NUMBER}
    sweep = {"a": (0.5, 1.0)}

    def perturb(self, m, rng):
        return covnoise(m, rng, float(self.params["a"]))


@register_method
class CovGauss0(LatentPerturbation):
    name = "covgauss0"
    description = "latent receiver reads rows drawn from N(0, Sigma_hat) (mean removed, content gone)"

    def perturb(self, m, rng):
        return covgauss(m, rng, keep_mean=False)


@register_method
class CovGaussMu(LatentPerturbation):
    name = "covgauss_mu"
    description = "latent receiver reads rows drawn from N(mu_hat, Sigma_hat) (mean and covariance kept)"

    def perturb(self, m, rng):
        return covgauss(m, rng, keep_mean=True)
