"""The sender pass of each training-free family (``harness.core.stages.SenderPass``), by name."""

from __future__ import annotations

from interlat_bench.harness.core.message import Message
from interlat_bench.harness.core.stages import SenderPass


def send(stage: SenderPass, lm, tasks: list[tuple[str, str]], log=None) -> dict[str, Message]:
    """Task id -> the message ``stage.family``'s sender passes on for it."""
    from interlat_bench.collectors import activation, cipher, kv_share, latentmas

    senders = {"latentmas": latentmas.send, "kv_share": kv_share.send, "cipher": cipher.send,
               "activation": activation.send}
    return senders[stage.family](lm, tasks, prompt_template=stage.prompt_template, log=log, **dict(stage.settings))
