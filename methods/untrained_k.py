"""untrained_k: the `latent` receiver reads K latent steps of the plain sender (SPEC sections 5, 6).

No compression training: the sender runs the latent-step loop of ``collectors.latent_steps``
with its initial ``lat_bos``/``h2e``, so this row measures what K latent steps carry before
a student learns to speak in them (the paper's "untrained 8 latents"). The receiver is the
one trained for `latent`, reused from the cache. Sender time is the K steps' share of their
batch, as waited for.
"""

from __future__ import annotations

from dataclasses import replace

from interlat_bench.harness.core.params import POSITIVE_INT
from interlat_bench.harness.core.registry import register_method
from interlat_bench.harness.core.stages import LatentSteps
from interlat_bench.methods.interlat import Latent


@register_method
class UntrainedK(Latent):
    name = "untrained_k"
    description = "latent receiver reads K latent steps of the untrained sender (paper sweep K = 8..128)"
    defaults = {**Latent.defaults, "k": 8}
    param_checks = {**Latent.param_checks, "k": POSITIVE_INT}

    def stages(self, benchmark, spec):
        return replace(super().stages(benchmark, spec), messages=LatentSteps(spec.sender_model, int(self.params["k"])))
