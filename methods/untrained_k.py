"""untrained_k: the `latent` receiver reads K latent steps of the plain sender (SPEC sections 5, 6).

No compression training: the sender runs the latent-step loop of ``collectors.latent_steps``
with its initial ``lat_bos``/``h2e``, so this row measures what K latent steps carry before
a student learns to speak in them (the paper's "untrained 8 latents"). The receiver is the
one trained for `latent`, reused from the cache. Sender time is the K steps' share of their
batch, as waited for.
"""

from __future__ import annotations

from interlat_bench.harness.core.params import POSITIVE_INT
from interlat_bench.harness.core.registry import register_method
from interlat_bench.methods.interlat import Latent


@register_method
class UntrainedK(Latent):
    name = "untrained_k"
    description = "latent receiver reads K latent steps of the untrained sender (paper sweep K = 8..128)"
    defaults = {**Latent.defaults, "k": 8}
    param_checks = {**Latent.param_checks, "k": POSITIVE_INT}

    def messages(self, ctx, samples, receiver):
        from interlat_bench.collectors.latent_steps import send_latent_steps
        from interlat_bench.harness.core import progress

        sender, k = ctx.model(ctx.spec.sender), int(self.params["k"])
        with progress.track(f"send {k} latent steps ({ctx.spec.sender})", len(samples)) as stage:
            return send_latent_steps(sender.model, sender.tokenizer, ctx.benchmark.sender_tasks(samples), k,
                                     log=progress.counter(stage))
