"""cross_task: the receiver reads the full latents of another evaluation task.

The other task is drawn per sample from a seeded stream (``item_seed(seed, id, "cross_task")``)
among the run's evaluation tasks (the runner collects messages for the whole split up to
``--limit``, so a resumed run draws the same ones), never the sample's own task. It keeps everything about a message (its form,
length distribution, statistics) except that it belongs to this task.
"""

from __future__ import annotations

import random

from interlat_bench.harness.core.errors import UserError
from interlat_bench.harness.core.message import NO_MESSAGE
from interlat_bench.harness.core.registry import register_method
from interlat_bench.harness.core.seeds import item_seed
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

    def message_for(self, sample, messages, seed):
        if sample.id not in messages:
            return NO_MESSAGE
        return messages[other_task(sample.id, list(messages), seed)]

    def transform(self, message, rng):
        return message  # the substitution is the whole change
