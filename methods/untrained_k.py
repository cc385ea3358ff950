"""untrained_k: the `latent` receiver reads K latent steps of the plain sender (SPEC sections 5, 6).

No compression training: the sender runs the latent-step loop of ``collectors.latent_steps``
with its initial ``lat_bos``/``h2e``, so this row measures what K latent steps carry before
a student learns to speak in them (the paper's "untrained 8 latents"). The receiver is the
one trained for `latent`, reused from the cache. Sender time is the K steps' share of their
batch, as waited for.
"""

from __future__ import annotations

from interlat_bench.harness.params import POSITIVE_INT
from interlat_bench.harness.registry import register_method
from interlat_bench.methods.base import NO_MESSAGE, Message
from interlat_bench.methods.interlat import Latent

BATCH = 16  # tasks per latent-step batch


@register_method
class UntrainedK(Latent):
    name = "untrained_k"
    description = "latent receiver reads K latent steps of the untrained sender (paper sweep K = 8..128)"
    defaults = {**Latent.defaults, "k": 8}
    param_checks = {**Latent.param_checks, "k": POSITIVE_INT}

    def prepare(self, ctx, samples):
        from interlat_bench.trainers.receiver import load_receiver

        folder = self.train(ctx)  # the `latent` receiver: same training parameters, same key
        self.lm, self.adapter, _, cfg = load_receiver(folder, dtype=ctx.spec.dtype)
        self.max_slot_rows = cfg.max_slot_rows
        self.messages = send_latent_steps(ctx, samples, int(self.params["k"]))

    def message(self, ctx, sample) -> Message:
        return self.messages.get(sample.id, NO_MESSAGE)


def send_latent_steps(ctx, samples, k: int) -> dict[str, Message]:
    import torch

    from interlat_bench.collectors.latent_steps import LatentStepHead, latent_steps
    from interlat_bench.collectors.messages import prompt_ids
    from interlat_bench.harness.prompts import LATENT_STEP_PROMPT
    from interlat_bench.harness.timing import clock_ms

    sender = ctx.model(ctx.spec.sender)
    tok = sender.tokenizer
    head = LatentStepHead.initial(sender.model.get_input_embeddings())
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out: dict[str, Message] = {}
    for i in range(0, len(samples), BATCH):
        batch = samples[i:i + BATCH]
        prompts = [prompt_ids(tok, LATENT_STEP_PROMPT, s.task) for s in batch]
        t0 = clock_ms()
        with torch.no_grad():
            z = latent_steps(sender.model, head, prompts, k, pad)
        share = (clock_ms() - t0) / len(batch)
        for s, rows in zip(batch, z.to("cpu", torch.float16)):
            out[s.id] = Message(kind="latent", latents=rows, sender_ms=share)
        ctx.log(f"sender {ctx.spec.sender}: {min(i + BATCH, len(samples))}/{len(samples)} x {k} latent steps")
    return out
