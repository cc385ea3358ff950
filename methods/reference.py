"""Reference policies that frame every ALFWorld table: the handcoded expert (upper bound)
and a uniform random policy over admissible commands (lower bound). No LLM involved."""

from __future__ import annotations

import random

from interlat_bench.harness.core.registry import register_method
from interlat_bench.harness.core.seeds import item_seed
from interlat_bench.methods.base import Method


class _ReferenceMethod(Method):
    benchmarks = ("alfworld",)
    parallel_episodes = True
    uses_model = False


class _Policy:
    needs_expert = False

    def __init__(self, seed: int, action_reply=str):
        self.seed, self.reply = seed, action_reply  # the benchmark writes an action as a reply

    def begin(self, prompt, message, sample) -> None:
        self.rng = random.Random(item_seed(self.seed, sample.id, "policy"))

    def choose(self, observation, options, info=None) -> str:
        return self.respond(observation, info)  # it acts among admissible commands already

    def timings_ms(self) -> dict[str, float]:
        return {}

    def episode_metrics(self) -> dict:
        return {}  # no generated replies


class ExpertPolicy(_Policy):
    needs_expert = True

    def respond(self, observation=None, info=None) -> str:
        return self.reply((info or {}).get("expert_action") or "look")


class RandomPolicy(_Policy):
    def respond(self, observation=None, info=None) -> str:
        options = sorted((info or {}).get("admissible") or ["look"])
        return self.reply(self.rng.choice(options))


@register_method
class Oracle(_ReferenceMethod):
    name = "oracle"
    description = "alfworld's handcoded expert (upper bound; 200-step cap unless --max-steps)"
    # The expert searches receptacles in a fixed order (open, look, close each), which takes
    # more than 50 steps in a few large rooms; with 200 it solves every game. It frames the
    # table as "solvable", and its steps column shows what its search costs.
    benchmark_defaults = {"alfworld": {"max_steps": 200}}

    def agent(self, ctx, receiver):
        return ExpertPolicy(ctx.spec.seed, ctx.benchmark.action_reply)


@register_method
class RandomActions(_ReferenceMethod):
    name = "random"
    description = "uniform over admissible commands, seeded (lower bound)"

    def agent(self, ctx, receiver):
        return RandomPolicy(ctx.spec.seed, ctx.benchmark.action_reply)
