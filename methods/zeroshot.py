"""Untrained receivers: the plain model alone, or reading the sender's plan as text."""

from __future__ import annotations

from interlat_bench.harness.registry import register_method
from interlat_bench.methods.base import NO_MESSAGE, Message, Method
from interlat_bench.methods.sending import SENDER_CHECKS, SENDER_DEFAULTS, collect_for


@register_method
class NoCommZeroShot(Method):
    name = "no_comm_zeroshot"
    description = "untrained receiver solves alone (no message)"

    def agent(self, ctx):
        from interlat_bench.methods.receiver import ReceiverAgent

        return ReceiverAgent(ctx.model(ctx.spec.receiver), ctx.decoding(), seed=ctx.spec.seed)


@register_method
class TextZeroShot(NoCommZeroShot):
    name = "text_zeroshot"
    description = "untrained receiver reads the sender's plan as plain text"
    needs_sender = True
    defaults = dict(SENDER_DEFAULTS)
    param_checks = SENDER_CHECKS

    def prepare(self, ctx, samples):
        self.messages = collect_for(ctx, samples, self.params)

    def message(self, ctx, sample) -> Message:
        m = self.messages.get(sample.id)
        if m is None:
            return NO_MESSAGE
        return m.as_text()
