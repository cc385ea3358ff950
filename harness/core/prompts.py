"""The sender's planner prompts and sampling settings: the one place they are defined.

Each benchmark names its own (``Benchmark.planner_prompt``, ``plan_temperature``); the
harness's collection and the collector's command line (``python -m
interlat_bench.collectors.messages --prompt math``) read them from the benchmark, so both
paths collect the same messages under the same cache keys. Pure constants (no torch).

SPEC section 2: ALFWorld plans from "Please provide a general plan to solve this task.\n\n
The task is: {task}"; MATH from a "plan only, do not solve" planner prompt; plans are
sampled with top_p 0.9, top_k 50 and temperature 0.7 (ALFWorld) / 0.8 (MATH).
"""

from __future__ import annotations

ALFWORLD_PLAN_PROMPT = "Please provide a general plan to solve this task.\n\nThe task is: {task}"
MATH_PLAN_PROMPT = (
    "You are the planner for a math problem. Do not solve it and do not state a final answer; "
    "write only a short, general step-by-step plan that a solver could follow.\n\n"
    "The problem is: {task}"
)
# The channel probe: the SPEC's general prompt plus one sentence, without which SmolLM2-135M
# restates the object's box in about a third of its plans (with it, greedy: 16/16 measured).
PROBE_PLAN_PROMPT = ("Please provide a general plan to solve this task. Say first where the object is."
                     "\n\nThe task is: {task}")
# What a sender reads before it speaks in K latent steps (SPEC section 5), on every benchmark.
LATENT_STEP_PROMPT = "Please generate a plan to solve this task: {task}"
# The generic prompt (a benchmark without its own planner prompt) is the SPEC's ALFWorld one.
DEFAULT_PLAN_PROMPT = ALFWORLD_PLAN_PROMPT

# Sender sampling in the paper: temperature 0.7 for ALFWorld, 0.8 for MATH (each benchmark's
# ``plan_temperature``); a benchmark without its own takes FALLBACK_TEMPERATURE.
FALLBACK_TEMPERATURE = 0.7
PAPER_TOP_P = 0.9
PAPER_TOP_K = 50

# A planner prompt may open with worked examples, as earlier turns of the sender's conversation:
# a base model copies a pattern it is shown where it ignores an instruction (Gemma-3-270m base
# repeats the probe's instruction; shown two tasks with their plans as turns, it plans).
# The examples travel inside the template string, turns separated by SHOT_TURN, so that every
# sender, every cache key and the single agent's own plan turn read them where they read the prompt.
SHOT_TURN = "\x1e"


def planner_turns(template: str, task: str) -> list[dict[str, str]]:
    """The sender's conversation: the template's example turns (user, assistant, ...), then the
    template's last part with the task, as a user turn."""
    *shots, last = template.split(SHOT_TURN)
    if len(shots) % 2:
        raise ValueError("a planner prompt's example turns come in (task, plan) pairs")
    turns = [{"role": ("user", "assistant")[i % 2], "content": text} for i, text in enumerate(shots)]
    return [*turns, {"role": "user", "content": last.format(task=task)}]

