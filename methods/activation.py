"""`activation`: activation communication (Ramesh & Li, ICML 2025; as Zephyroam/KVComm runs it),
training-free.

The state entering the sender's layer ``k`` at its prompt's last token (``collectors.activation``)
is grafted where the receiver's prompt enters its layer ``j``, at its last token: replacing
the receiver's state, added to it, or averaged with it (``op``). Negative layers count from the
end (the default -6 is the paper's layer 26 of LLaMA's 32).
"""

from __future__ import annotations

from interlat_bench.harness.core.errors import UserError
from interlat_bench.harness.core.message import MessageKind
from interlat_bench.harness.core.params import Check, one_of
from interlat_bench.harness.core.registry import register_method
from interlat_bench.methods.training_free import TrainingFree

LAYER = Check(lambda v: isinstance(v, int) and not isinstance(v, bool), "a layer index (negative: from the end)")


def layer_index(value: int, n_layers: int, name: str) -> int:
    index = value + n_layers if value < 0 else value
    if not 0 <= index < n_layers:
        raise UserError(f"activation: {name}={value} is not a layer of a {n_layers}-layer model")
    return index


@register_method
class Activation(TrainingFree):
    name = "activation"
    description = "activation communication: the sender's state at layer k grafted into the receiver's layer j"
    family = "activation"
    sends = MessageKind.ACTIVATION
    defaults = {**TrainingFree.defaults, "k": -6, "j": -6, "op": "replace"}
    param_checks = {"control": one_of("none", "cross_task"), "k": LAYER, "j": LAYER,
                    "op": one_of("replace", "sum", "mean")}

    def sender_settings(self):
        return {"k": int(self.params["k"])}

    def agent(self, ctx, receiver):
        from interlat_bench.collectors.kv import decoder_layers
        from interlat_bench.methods.prefix_agents import ActivationAgent

        lm = self.receiver(ctx)
        j = layer_index(int(self.params["j"]), len(decoder_layers(lm.model)), "j")
        return ActivationAgent(lm, ctx.decoding(), seed=ctx.spec.seed, j=j, op=self.params["op"])
