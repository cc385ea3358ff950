"""Trained receivers: Interlat (`latent`) and its two baselines (`text`, `no_comm`).

All three train the same receiver with the same trainer on the same conversations; only
what fills the slot differs (SPEC sections 3, 4 and 6). The sender's messages and the
trained receiver are cached, so a second run reuses them.
"""

from __future__ import annotations

from interlat_bench.harness.registry import register_method
from interlat_bench.methods.base import NO_MESSAGE, Message, Method
from interlat_bench.methods.sending import SENDER_DEFAULTS, collect_for

TRAIN_DEFAULTS = {"preset": "quick", "n_train": None, "curriculum": "schedule"}


class TrainedReceiver(Method):
    """Base for methods whose receiver is fine-tuned with a given message kind."""

    trained_with = "none"
    defaults = {**TRAIN_DEFAULTS}

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
        self.lm, self.adapter, _ = load_receiver(folder, dtype=ctx.spec.dtype)
        self.messages = collect_for(ctx, samples, self.params) if self.kind != "none" else {}

    def message(self, ctx, sample) -> Message:
        m = self.messages.get(sample.id)
        if m is None or self.kind == "none":
            return NO_MESSAGE
        if self.kind == "text":
            return Message(kind="text", text=m.text, token_ids=m.token_ids, sender_ms=m.sender_ms)
        return m

    def slot_rows(self, message: Message):
        """What the trained receiver reads between <bop> and <eop>."""
        import torch

        from interlat_bench.harness import conversation as conv

        emb = self.lm.model.get_input_embeddings()
        with torch.no_grad():
            if message.kind == "latent" and self.adapter is not None:
                lat = message.latents.to(emb.weight.device, dtype=next(self.adapter.parameters()).dtype)
                return self.adapter(lat).to(emb.weight.dtype)
            if message.kind == "text":
                ids = conv.tokenize(self.lm.tokenizer, message.text or "")  # receiver's own tokenizer
                return emb(torch.tensor(ids, dtype=torch.long, device=emb.weight.device))
        return None

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


@register_method
class Latent(TrainedReceiver):
    name = "latent"
    description = "Interlat: receiver reads the sender's last-layer states through the adapter"
    trained_with = "latent"
    needs_sender = True
    defaults = {**TRAIN_DEFAULTS, **SENDER_DEFAULTS}
