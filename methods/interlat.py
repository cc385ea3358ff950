"""Trained receivers: Interlat (`latent`) and its two baselines (`text`, `no_comm`).

All three train the same receiver with the same trainer on the same conversations; only
what fills the slot differs (SPEC sections 3, 4 and 6). The sender's messages and the
trained receiver are cached, so a second run reuses them.
"""

from __future__ import annotations

from interlat_bench.harness.params import OPTIONAL_POSITIVE_INT, one_of
from interlat_bench.harness.registry import register_method
from interlat_bench.methods.base import NO_MESSAGE, Message, Method
from interlat_bench.methods.sending import SENDER_CHECKS, SENDER_DEFAULTS, collect_for

TRAIN_DEFAULTS = {"preset": "quick", "n_train": None, "curriculum": "schedule"}
# Names as in trainers.receiver.PRESETS and trainers.curriculum.MODES (a test keeps them equal;
# importing those modules here would load torch for `--help`).
TRAIN_CHECKS = {"preset": one_of("quick", "paper"), "n_train": OPTIONAL_POSITIVE_INT,
                "curriculum": one_of("schedule", "reference", "pure")}


class TrainedReceiver(Method):
    """Base for methods whose receiver is fine-tuned with a given message kind."""

    trained_with = "none"
    defaults = {**TRAIN_DEFAULTS}
    param_checks = TRAIN_CHECKS

    @property
    def kind(self) -> str:
        """The message kind in the slot, in training and at evaluation alike."""
        return self.trained_with

    def train_config(self, benchmark):
        from interlat_bench.trainers.receiver import preset

        # Benchmark-specific sizing applies to the CPU preset only; `paper` stays as published.
        sizing = benchmark.train_overrides if self.params["preset"] == "quick" else {}
        overrides = {**sizing, "curriculum": self.params["curriculum"]}
        if self.params.get("n_train") is not None:
            overrides["n_train"] = int(self.params["n_train"])
        return preset(self.params["preset"], **overrides)

    def train(self, ctx, deepspeed: str | None = None):
        """Collect the training tasks' messages and train (or reuse) the receiver; returns its folder."""
        from interlat_bench.trainers.receiver import train_receiver

        cfg = self.train_config(ctx.benchmark)
        train = ctx.benchmark.train_samples(limit=cfg.n_train)
        train_msgs, key = {}, None
        if self.kind != "none":
            train_msgs = collect_for(ctx, train, self.params)
            key = train_msgs.key
        return train_receiver(ctx.spec.receiver, self.kind, train, train_msgs, cfg, messages_key=key,
                              dtype=ctx.spec.dtype, deepspeed=deepspeed, log=ctx.log)

    def prepare(self, ctx, samples):
        from interlat_bench.trainers.receiver import load_receiver

        folder = self.train(ctx)
        self.lm, self.adapter, _, cfg = load_receiver(folder, dtype=ctx.spec.dtype)
        self.max_slot_rows = cfg.max_slot_rows  # the slot limit the receiver was trained with
        self.messages = collect_for(ctx, samples, self.params) if self.kind != "none" else {}

    def message(self, ctx, sample) -> Message:
        m = self.messages.get(sample.id)
        if m is None or self.kind == "none":
            return NO_MESSAGE
        if self.kind == "text":
            return m.as_text()
        return m

    def slot_rows(self, message: Message):
        """What the trained receiver reads between <bop> and <eop>: built by the training code's
        ``trainers.slot.slot_rows``, truncated to the checkpoint's ``max_slot_rows``."""
        import torch

        from interlat_bench.harness import conversation as conv
        from interlat_bench.trainers.slot import slot_rows

        if message.kind == "latent" and message.latents is not None and len(message.latents) == 0:
            return None  # no rows left (truncate rho=0): the slot stays <bop><eop>
        # Text: the receiver's own tokenizer on the plan text, as in training (build_examples).
        ids = conv.tokenize(self.lm.tokenizer, message.text or "") if message.kind == "text" else []
        with torch.no_grad():
            return slot_rows(message.kind, latents=message.latents if message.kind == "latent" else None,
                             plan_ids=ids, adapter=self.adapter, embed=self.lm.model.get_input_embeddings(),
                             max_rows=self.max_slot_rows, ratio=1.0)

    def agent(self, ctx):
        from interlat_bench.methods.receiver import ReceiverAgent

        return ReceiverAgent(self.lm, ctx.decoding(), seed=ctx.spec.seed, slot_encoder=self.slot_rows)


@register_method
class NoComm(TrainedReceiver):
    name = "no_comm"
    description = "receiver trained and evaluated with an empty slot"
    trained_with = "none"


@register_method
class Text(TrainedReceiver):
    name = "text"
    description = "receiver trained and evaluated with the plan text in the slot"
    trained_with = "text"
    needs_sender = True
    defaults = {**TRAIN_DEFAULTS, **SENDER_DEFAULTS}
    param_checks = {**TRAIN_CHECKS, **SENDER_CHECKS}


@register_method
class Latent(TrainedReceiver):
    name = "latent"
    description = "Interlat: receiver reads the sender's last-layer states through the adapter"
    trained_with = "latent"
    needs_sender = True
    defaults = {**TRAIN_DEFAULTS, **SENDER_DEFAULTS}
    param_checks = {**TRAIN_CHECKS, **SENDER_CHECKS}
