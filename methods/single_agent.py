"""Single-agent baselines (SPEC section 6): one model plans (or not) and acts, no message.

- `no_cot`: the receiver fine-tuned on the benchmark's conversations as they are, with no
  plan and no slot, then evaluated the same way: a single agent that acts without planning.
- `cot_full`: a single agent that writes the full plan itself, then acts. Its conversation
  opens with its own exchange (the benchmark's planner prompt with the task, and its plan as
  its own assistant turn), then the task. The plan's author is the receiver model itself
  (the run's sender is set to the receiver), sampled with the same settings and collector as
  the other methods' plans; the agent is fine-tuned on its acting turns with that plan in
  context (the plan turn is context, not a training target), and plays the same way.
Both are trained by the same trainer and curriculum as `latent`, `text` and `no_comm`.
"""

from __future__ import annotations

from dataclasses import replace

from interlat_bench.harness.core.conversation import Layout
from interlat_bench.harness.core.message import MessageKind
from interlat_bench.harness.core.registry import register_method
from interlat_bench.methods.interlat import TRAIN_CHECKS, TRAIN_DEFAULTS, TrainedReceiver
from interlat_bench.methods.sending import SENDER_CHECKS, SENDER_DEFAULTS


@register_method
class NoCoT(TrainedReceiver):
    name = "no_cot"
    description = "single agent fine-tuned to act without a plan (no slot, no message)"
    trained_with = MessageKind.NONE
    sends = MessageKind.NONE
    layout = Layout.INLINE


@register_method
class CoTFull(TrainedReceiver):
    name = "cot_full"
    description = "single agent: writes its own plan (the receiver model plans), then acts with it in context"
    trained_with = MessageKind.TEXT
    sends = MessageKind.TEXT
    layout = Layout.OWN_PLAN
    plans_with_receiver = True
    defaults = {**TRAIN_DEFAULTS, **SENDER_DEFAULTS}
    param_checks = {**TRAIN_CHECKS, **SENDER_CHECKS}

    def shipped(self, message):
        # Its own plan: recorded (rows, text) but marked internal, so it ships 0 bytes.
        return replace(super().shipped(message), internal=True)
