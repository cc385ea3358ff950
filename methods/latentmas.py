"""`latentmas`: LatentMAS (Zou et al. 2025; Gen-Verse/LatentMAS), training-free.

The sender reads its planner prompt and thinks ``latent_steps`` latent steps (its last-layer
state realigned into its input space and fed back, ``collectors.latentmas``); its whole KV
cache (prompt + steps; only the steps with ``latent_only``) is the message, and the plain
receiver model answers on top of it (``KVPrefixAgent``). The grid sweeps ``latent_steps``
0, 10 and 40 unless one is given. On the probe the prompt's own KV holds the facts, so
``latent_only`` and the controls are what say whether the latent steps carry anything.
"""

from __future__ import annotations

from interlat_bench.harness.core.message import MessageKind
from interlat_bench.harness.core.params import BOOL, int_range, one_of
from interlat_bench.harness.core.registry import register_method
from interlat_bench.methods.training_free import TrainingFree


@register_method
class LatentMAS(TrainingFree):
    name = "latentmas"
    description = "LatentMAS: m latent steps of the sender; its KV cache is the receiver's prefix (training-free)"
    family = "latentmas"
    sends = MessageKind.KV
    defaults = {**TrainingFree.defaults, "latent_steps": 10, "realign": "matrix", "latent_only": False}
    param_checks = {**TrainingFree.param_checks, "latent_steps": int_range(0),
                    "realign": one_of("matrix", "identity"), "latent_only": BOOL}
    sweep = {"latent_steps": (0, 10, 40)}

    def sender_settings(self):
        return {"latent_steps": int(self.params["latent_steps"]), "realign_mode": self.params["realign"],
                "latent_only": bool(self.params["latent_only"])}

    def agent(self, ctx, receiver):
        from interlat_bench.methods.prefix_agents import KVPrefixAgent

        return KVPrefixAgent(self.receiver(ctx), ctx.decoding(), seed=ctx.spec.seed)
