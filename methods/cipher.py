"""`cipher`: CIPHER (Pham et al., ICLR 2024), training-free.

The sender writes its plan as expected embeddings (each step's next-token distribution at
``temperature`` times the input embeddings, fed back; ``collectors.cipher``); the plain receiver
model reads those rows where `text_zeroshot` reads the plan's tokens. ``temperature`` 0 is the
one-hot limit: the greedy plan's own token embeddings. The default 0.7 is Zephyroam/KVComm's.
"""

from __future__ import annotations

from interlat_bench.harness.core.message import MessageKind
from interlat_bench.harness.core.params import POSITIVE_INT, Check
from interlat_bench.harness.core.registry import register_method
from interlat_bench.methods.sending import SENDER_DEFAULTS
from interlat_bench.methods.training_free import TrainingFree

NON_NEGATIVE = Check(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0, "a number >= 0")


@register_method
class Cipher(TrainingFree):
    name = "cipher"
    description = "CIPHER: the plan as expected embeddings, read inline by the plain receiver (training-free)"
    family = "cipher"
    sends = MessageKind.EMBEDDINGS
    # plan_tokens: the plan's length cap, as for the other senders (the probe scales it with its facts)
    defaults = {**TrainingFree.defaults, "plan_tokens": SENDER_DEFAULTS["plan_tokens"], "temperature": 0.7}
    param_checks = {**TrainingFree.param_checks, "plan_tokens": POSITIVE_INT, "temperature": NON_NEGATIVE}

    def sender_settings(self):
        return {"max_new_tokens": int(self.params["plan_tokens"]), "temperature": float(self.params["temperature"])}

    def agent(self, ctx, receiver):
        from interlat_bench.methods.agents import ReceiverAgent

        return ReceiverAgent(self.receiver(ctx), ctx.decoding(), seed=ctx.spec.seed)
