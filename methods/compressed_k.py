"""compressed_k: the `latent` receiver reads K latents of a student trained to speak in them.

SPEC section 5 (``trainers.compression``): the student starts from the sender and the
initial latent-step head, and learns against the frozen `latent` receiver (reused from the
cache) on the receiver's training tasks and plans; at evaluation it sends K latent steps
(``collectors.latent_steps``). The method declares the student's training as a stage
(``StudentTraining``); the runner builds it. Students are cached by content; `untrained_k`
is the same loop without this training.
"""

from __future__ import annotations

from dataclasses import replace

from interlat_bench.harness.core.params import POSITIVE_INT, POSITIVE_NUMBER
from interlat_bench.harness.core.registry import register_method
from interlat_bench.harness.core.stages import LatentSteps, StudentTraining
from interlat_bench.methods.interlat import Latent

COMPRESS_DEFAULTS = {"k": 8, "compress_epochs": 1.0, "compress_lr": 1e-5, "compress_head_lr": 1e-3}


@register_method
class CompressedK(Latent):
    name = "compressed_k"
    description = "latent receiver reads K latents of a student trained to compress (SPEC 5; paper K = 8..128)"
    defaults = {**Latent.defaults, **COMPRESS_DEFAULTS}
    param_checks = {**Latent.param_checks, "k": POSITIVE_INT, "compress_epochs": POSITIVE_NUMBER,
                    "compress_lr": POSITIVE_NUMBER, "compress_head_lr": POSITIVE_NUMBER}

    def stages(self, benchmark, spec):
        student = StudentTraining(k=int(self.params["k"]), epochs=float(self.params["compress_epochs"]),
                                  lr=float(self.params["compress_lr"]), head_lr=float(self.params["compress_head_lr"]))
        return replace(super().stages(benchmark, spec), messages=LatentSteps(spec.sender_model, student.k, student))
