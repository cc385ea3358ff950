"""`kv_share`: KVComm (Shi et al., ICLR 2026; Zephyroam/KVComm), training-free.

The sender's prefill KV of its planner prompt is the message: the chosen ``layers`` whole
(``all``, ``first:k``, ``last:k``), every other layer its first position only, an attention
sink (``collectors.kv_share``). The plain receiver model reads its prompt on top of it, at the
same layers (``KVPrefixAgent``, which masks what a layer was not sent).
"""

from __future__ import annotations

import re

from interlat_bench.harness.core.message import MessageKind
from interlat_bench.harness.core.params import Check
from interlat_bench.harness.core.registry import register_method
from interlat_bench.methods.training_free import TrainingFree

LAYERS = Check(lambda v: isinstance(v, str) and re.fullmatch(r"all|(first|last):[1-9][0-9]*", v) is not None,
               "all, first:k or last:k (k >= 1 layers)")


@register_method
class KVShare(TrainingFree):
    name = "kv_share"
    description = "KVComm: the sender's prefill KV of chosen layers is the receiver's prefix (training-free)"
    family = "kv_share"
    sends = MessageKind.KV
    defaults = {**TrainingFree.defaults, "layers": "all"}
    param_checks = {**TrainingFree.param_checks, "layers": LAYERS}

    def sender_settings(self):
        return {"layers": self.params["layers"]}

    def agent(self, ctx, receiver):
        from interlat_bench.methods.prefix_agents import KVPrefixAgent

        return KVPrefixAgent(self.receiver(ctx), ctx.decoding(), seed=ctx.spec.seed)
