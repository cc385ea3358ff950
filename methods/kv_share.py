"""`kv_share`: KVComm (Shi et al., ICLR 2026; Zephyroam/KVComm), training-free.

The sender's prefill KV of its planner prompt is the message: the chosen ``layers`` whole
(``all``, ``first:k``, ``last:k``, or ``top:f``), every other layer its first position only, an
attention sink (``collectors.kv_share``). The plain receiver model reads its prompt on top of it,
at the same layers (``KVPrefixAgent``, which masks what a layer was not sent).

``top:f`` is KVComm's selection (``layer_importance.py``): every layer is sent for the first
``CALIBRATION`` training samples, the receiver reads each sample's prompt on top, and a layer's
importance is the attention its prompt tokens give the sender's positions (the sink left out),
summed over those positions, averaged over heads, tokens and samples; the floor(f x layers) most
important layers are sent (at least one). KVComm calibrates on the first test items
(``calib_size``, default 1) and may add a Gaussian prior over depth (``alpha`` 1 turns it off, its
default); here the calibration samples are training samples, and there is no prior.
"""

from __future__ import annotations

import math
import re

from interlat_bench.harness.core.message import MessageKind
from interlat_bench.harness.core.params import Check
from interlat_bench.harness.core.registry import register_method
from interlat_bench.methods.training_free import TrainingFree

LAYERS = Check(lambda v: isinstance(v, str) and (re.fullmatch(r"all|(first|last):[1-9][0-9]*", v) is not None
                                                 or _fraction(v) is not None),
               "all, first:k or last:k (k >= 1 layers), or top:f (0 < f <= 1)")
CALIBRATION = 16  # training samples that rank the layers for top:f


def _fraction(spec: str) -> float | None:
    """f of ``top:f`` where 0 < f <= 1; None for any other spec."""
    where, _, value = spec.partition(":")
    try:
        f = float(value)
    except ValueError:
        return None
    return f if where == "top" and 0 < f <= 1 else None


def top_layers(attention, fraction: float) -> tuple[int, ...]:
    """The floor(fraction x layers) layers (at least one) with the most ``attention``, in order."""
    count = max(1, math.floor(fraction * len(attention) + 1e-9))
    ranked = sorted(range(len(attention)), key=lambda i: -float(attention[i]))
    return tuple(sorted(ranked[:count]))


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

    def calibration(self) -> int:
        return CALIBRATION if _fraction(self.params["layers"]) is not None else 0

    def calibration_settings(self):
        return {"layers": "all"}

    def calibrated(self, attention):
        return {"layers": top_layers(attention.tolist(), _fraction(self.params["layers"]))}

    def agent(self, ctx, receiver):
        from interlat_bench.methods.prefix_agents import KVPrefixAgent

        return KVPrefixAgent(self.receiver(ctx), ctx.decoding(), seed=ctx.spec.seed)
