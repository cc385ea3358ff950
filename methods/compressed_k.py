"""compressed_k: the `latent` receiver reads K latents of a student trained to speak in them.

SPEC section 5 (``trainers.compression``): the student starts from the sender and the
initial latent-step head, and learns against the frozen `latent` receiver (reused from the
cache) on the training tasks; at evaluation it sends K latent steps
(``collectors.latent_steps``). Students are cached by content; `untrained_k` is the same
loop without this training.
"""

from __future__ import annotations

from interlat_bench.harness.core import progress
from interlat_bench.harness.core.params import POSITIVE_INT, POSITIVE_NUMBER
from interlat_bench.harness.core.registry import register_method
from interlat_bench.methods.interlat import Latent

COMPRESS_DEFAULTS = {"k": 8, "compress_epochs": 1.0, "compress_lr": 1e-5, "compress_head_lr": 1e-3}


@register_method
class CompressedK(Latent):
    name = "compressed_k"
    description = "latent receiver reads K latents of a student trained to compress (SPEC 5; paper K = 8..128)"
    defaults = {**Latent.defaults, **COMPRESS_DEFAULTS}
    param_checks = {**Latent.param_checks, "k": POSITIVE_INT, "compress_epochs": POSITIVE_NUMBER,
                    "compress_lr": POSITIVE_NUMBER, "compress_head_lr": POSITIVE_NUMBER}

    def compress_config(self, receiver):
        from interlat_bench.trainers.compression import CompressConfig

        return CompressConfig(k=int(self.params["k"]), epochs=float(self.params["compress_epochs"]),
                              lr=float(self.params["compress_lr"]), head_lr=float(self.params["compress_head_lr"]),
                              batch_size=receiver.cfg.batch_size, seed=receiver.cfg.seed)

    def messages(self, ctx, samples, receiver):
        from interlat_bench.collectors.latent_steps import send_latent_steps
        from interlat_bench.methods.sending import collect_plans
        from interlat_bench.trainers.compression import load_student, train_student

        # The receiver's own training tasks and their full latents (both cached already).
        train = ctx.benchmark.train_samples(limit=receiver.cfg.n_train, detours=receiver.cfg.detours)
        plans = collect_plans(ctx, train, self.params)
        folder = train_student(ctx.spec.sender, receiver, receiver.folder, train, plans, self.compress_config(receiver),
                               messages_key=plans.key, plan_prompt=ctx.benchmark.planner_prompt,
                               dtype=ctx.spec.dtype, log=ctx.log)
        student = load_student(folder, dtype=ctx.spec.dtype)
        k = int(self.params["k"])
        with progress.track(f"send {k} latent steps (trained student)", len(samples)) as stage:
            return send_latent_steps(student.lm.model, student.lm.tokenizer, ctx.benchmark.sender_tasks(samples), k,
                                     head=student.head, log=progress.counter(stage))
