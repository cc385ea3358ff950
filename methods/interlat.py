"""Trained receivers: Interlat (`latent`) and its two baselines (`text`, `no_comm`).

All three train the same receiver with the same trainer on the same conversations; only
what fills the slot differs (SPEC sections 3, 4 and 6). The sender's messages and the
trained receiver are cached, so a second run reuses them.
"""

from __future__ import annotations

from interlat_bench.harness.core.conversation import Layout
from interlat_bench.harness.core.message import MessageKind
from interlat_bench.harness.core.params import OPTIONAL_POSITIVE_INT, one_of
from interlat_bench.harness.core.registry import register_method
from interlat_bench.methods.base import Method
from interlat_bench.methods.sending import SENDER_CHECKS, SENDER_DEFAULTS

# Training settings that only a latent receiver uses (its adapter, its plan-text pass): left out
# of the other kinds' configurations, so that tuning them does not change (and retrain) text or
# no_comm.
LATENT_ONLY = ("adapter_warmup_steps", "warmup_lr", "warmup_ce_weight", "warmup_plans", "adapter_positions",
               "plan_ce_weight")
TRAIN_DEFAULTS = {"preset": "quick", "n_train": None, "curriculum": "schedule"}
# Names as in trainers.receiver.PRESETS and trainers.curriculum.MODES (a test keeps them equal;
# importing those modules here would load torch for `--help`).
TRAIN_CHECKS = {"preset": one_of("quick", "cpu", "paper"), "n_train": OPTIONAL_POSITIVE_INT,
                "curriculum": one_of("schedule", "reference", "pure")}


class TrainedReceiver(Method):
    """Base for methods whose receiver is fine-tuned with a given message kind and then
    evaluated reading the same kind."""

    trained_with = MessageKind.NONE
    defaults = {**TRAIN_DEFAULTS}
    param_checks = TRAIN_CHECKS

    def train_config(self, benchmark, seed: int = 0):
        from interlat_bench.trainers.config import preset

        # Benchmark-specific sizing applies to the CPU preset only; `paper` stays as published.
        sizing = benchmark.train_overrides if self.params["preset"] == "quick" else {}
        if self.trained_with is not MessageKind.LATENT:
            sizing = {k: v for k, v in sizing.items() if k not in LATENT_ONLY}
        overrides = {**sizing, "curriculum": self.params["curriculum"], "seed": seed}
        if self.params.get("n_train") is not None:
            overrides["n_train"] = int(self.params["n_train"])
        return preset(self.params["preset"], **overrides)

    def agent(self, ctx, receiver):
        from interlat_bench.methods.agents import ReceiverAgent

        slot = receiver.slot if receiver.layout is Layout.SLOT else None
        return ReceiverAgent(receiver.lm, ctx.decoding(), seed=ctx.spec.seed, slot_encoder=slot,
                             layout=receiver.layout, plan_prompt=ctx.benchmark.planner_prompt)


@register_method
class NoComm(TrainedReceiver):
    name = "no_comm"
    description = "receiver trained and evaluated with an empty slot"
    trained_with = MessageKind.NONE
    sends = MessageKind.NONE


@register_method
class Text(TrainedReceiver):
    name = "text"
    description = "receiver trained and evaluated with the plan text in the slot"
    trained_with = MessageKind.TEXT
    sends = MessageKind.TEXT
    defaults = {**TRAIN_DEFAULTS, **SENDER_DEFAULTS}
    param_checks = {**TRAIN_CHECKS, **SENDER_CHECKS}


@register_method
class Latent(TrainedReceiver):
    name = "latent"
    description = "Interlat: receiver reads the sender's last-layer states through the adapter"
    trained_with = MessageKind.LATENT
    sends = MessageKind.LATENT
    defaults = {**TRAIN_DEFAULTS, **SENDER_DEFAULTS}
    param_checks = {**TRAIN_CHECKS, **SENDER_CHECKS}
