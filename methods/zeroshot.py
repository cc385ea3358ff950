"""Untrained receivers: the plain model alone, or reading the sender's plan as text."""

from __future__ import annotations

from interlat_bench.harness.core.message import MessageKind
from interlat_bench.harness.core.registry import register_method
from interlat_bench.methods.base import Method
from interlat_bench.methods.sending import SENDER_CHECKS, SENDER_DEFAULTS


@register_method
class NoCommZeroShot(Method):
    name = "no_comm_zeroshot"
    description = "untrained receiver solves alone (no message)"

    def agent(self, ctx, receiver):
        from interlat_bench.methods.agents import ReceiverAgent

        return ReceiverAgent(ctx.model(ctx.spec.receiver_model), ctx.decoding(), seed=ctx.spec.seed)


@register_method
class TextZeroShot(NoCommZeroShot):
    name = "text_zeroshot"
    description = "untrained receiver reads the sender's plan as plain text"
    sends = MessageKind.TEXT
    defaults = dict(SENDER_DEFAULTS)
    param_checks = SENDER_CHECKS
