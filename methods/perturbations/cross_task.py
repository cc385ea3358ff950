"""cross_task: the receiver reads the full latents of another evaluation task.

The other task is drawn per sample from a seeded stream (``item_seed(seed, id, "cross_task")``)
among the run's evaluation tasks (the whole split up to ``--limit``, so a resumed run draws
the same ones), never the sample's own task. It keeps everything about a message (its form,
length distribution, statistics) except that it belongs to this task.
"""

from __future__ import annotations

import random

from interlat_bench.harness.errors import UserError
from interlat_bench.harness.registry import register_method
from interlat_bench.harness.seeds import item_seed
from interlat_bench.methods.base import NO_MESSAGE, Message
from interlat_bench.methods.perturbations.base import LatentPerturbation


def other_task(task_id: str, pool: list[str], seed: int) -> str:
    """A task id from ``pool`` other than ``task_id``, the same for the same inputs."""
    others = sorted(t for t in set(pool) if t != task_id)
    if not others:
        raise UserError("cross_task needs at least two evaluation tasks (raise --limit)")
    return others[random.Random(item_seed(seed, task_id, "cross_task")).randrange(len(others))]


@register_method
class CrossTask(LatentPerturbation):
    name = "cross_task"
    description = "latent receiver reads the latents of another task (seeded per sample)"

    def prepare(self, ctx, samples):
        # Messages of every evaluation task, not only those left to play, so the draw does not
        # depend on what an earlier, interrupted run finished.
        super().prepare(ctx, ctx.benchmark.samples(ctx.spec.split, ctx.spec.limit))
        self.pool = sorted(self.messages)

    def message(self, ctx, sample) -> Message:
        if sample.id not in self.messages:
            return NO_MESSAGE
        return self.messages[other_task(sample.id, self.pool, ctx.spec.seed)]

    def transform(self, message, rng):
        return message  # the substitution is the whole change
