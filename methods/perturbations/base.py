"""What every perturbation row shares: the `latent` receiver, a changed message.

The receiver is the one trained for `latent` (same training parameters, same messages, so
the same checkpoint key: it is read from the cache, never retrained). Only the message the
receiver reads at evaluation changes: ``perturb`` maps the sender's matrix M (L x H) to
another matrix, drawing from a generator seeded per sample (``harness.core.seeds.item_seed``).
The perturbation's own parameters enter the run key, not the checkpoint key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from interlat_bench.methods.base import Message
from interlat_bench.methods.interlat import Latent

if TYPE_CHECKING:
    import torch


class LatentPerturbation(Latent):
    """Receiver trained on full latents; at evaluation it reads ``perturb(M)`` instead of M."""

    # Not registered itself: the registry lists the subclasses.
    name: ClassVar[str]

    def transform(self, message: Message, rng: torch.Generator) -> Message:
        import torch

        if message.latents is None:  # nothing to perturb (no message for this task)
            return message
        m = message.latents
        # float64 so that the statistics a perturbation keeps hold to float tolerance; the
        # result goes back to the message's dtype, as it would arrive over the wire.
        return message.with_latents(self.perturb(m.to(torch.float64), rng).to(m.dtype))

    def perturb(self, m: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


def centre(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu_hat, X): the row mean (1 x H) and the centred rows X = M - mu_hat."""
    mu = m.mean(dim=0, keepdim=True)
    return mu, m - mu


def normal(shape: tuple[int, ...], rng: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Standard normal draws from ``rng`` (a CPU generator), on ``like``'s device and dtype."""
    import torch

    return torch.randn(shape, generator=rng, dtype=torch.float64).to(like.device, like.dtype)


def covariance_draw(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """T rows drawn from N(0, Sigma_hat), Sigma_hat = X^T X / (T - 1): Z X / sqrt(T - 1) with
    Z ~ N(0, I_T x T). Each row is sum_t z_t X_t / sqrt(T-1), whose covariance is exactly
    Sigma_hat. A one-row message has no sample covariance: Sigma_hat is taken as 0."""
    t = x.shape[0]
    if t < 2:
        return x.new_zeros(x.shape)
    return normal((t, t), rng, x) @ x / (t - 1) ** 0.5
