"""randomrot: the message's mean and covariance exactly, its structure randomly rotated.

With X = M - mu_hat and X / sqrt(T-1) = U S V^T (thin SVD, r = the number of non-zero
singular values), the output is mu_hat + X V diag(1/S) Q diag(S) V^T with Q a Haar-random
r x r orthogonal matrix. X V diag(1/S) = sqrt(T-1) U has orthonormal (scaled) columns that
sum to zero over rows, so the mean stays mu_hat and the covariance is
V S Q^T U^T U Q S V^T = V S^2 V^T = Sigma_hat, while what each row holds is scrambled.
"""

from __future__ import annotations

from interlat_bench.harness.core.registry import register_method
from interlat_bench.methods.perturbations.base import LatentPerturbation, centre, normal


def haar_orthogonal(r: int, rng, like):
    """A Haar-distributed r x r orthogonal matrix: QR of a Gaussian matrix, signs fixed by R's diagonal."""
    import torch

    q, rr = torch.linalg.qr(normal((r, r), rng, like))
    return q * torch.sign(torch.diagonal(rr)).unsqueeze(0)


def randomrot(m, rng, tol: float = 1e-9):
    import torch

    mu, x = centre(m)
    t = m.shape[0]
    if t < 2:
        return m.clone()
    _, s, vh = torch.linalg.svd(x / (t - 1) ** 0.5, full_matrices=False)
    keep = s > tol * s.max().clamp_min(1e-300)
    s, v = s[keep], vh[keep].T
    if s.numel() == 0:  # every row equal: nothing to rotate
        return m.clone()
    q = haar_orthogonal(int(s.numel()), rng, m)
    return mu + (x @ v / s) @ q @ (s.unsqueeze(1) * v.T)


@register_method
class RandomRot(LatentPerturbation):
    name = "randomrot"
    description = "latent receiver reads the message randomly rotated within its span (mean, covariance kept)"

    def perturb(self, m, rng):
        return randomrot(m, rng)
