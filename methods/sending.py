"""Getting the sender's messages for a run's samples (collected once, cached on disk)."""

from __future__ import annotations

from typing import Any

from interlat_bench.benchmarks.base import Sample
from interlat_bench.harness.context import RunContext

# Sender decoding (SPEC section 2: the paper samples plans with top_p 0.9, top_k 50,
# temperature 0.8 for MATH and 0.7 for ALFWorld). Seeded per task, so reproducible.
SENDER_DEFAULTS: dict[str, Any] = {"plan_tokens": 128, "plan_greedy": False, "plan_temperature": None}
PAPER_TEMPERATURE = {"math": 0.8, "alfworld": 0.7}


class Messages(dict):
    """task id -> Message, plus ``key``: the content address of the collection."""

    key: str = ""


def collect_for(ctx: RunContext, samples: list[Sample], params: dict[str, Any],
                keep_rows: int | None = None) -> Messages:
    from interlat_bench.collectors.messages import CollectConfig, collect_messages, load_messages
    from interlat_bench.harness.generation import Decoding

    temperature = params.get("plan_temperature") or PAPER_TEMPERATURE.get(ctx.spec.benchmark, 0.7)
    cfg = CollectConfig(
        sender=ctx.spec.sender,
        dtype=ctx.spec.dtype,
        prompt_template=ctx.benchmark.planner_prompt,
        decoding=Decoding(greedy=bool(params.get("plan_greedy")), temperature=temperature, top_p=0.9,
                          top_k=50, max_new_tokens=int(params["plan_tokens"])),
        seed=ctx.spec.seed,
        keep_rows=keep_rows,
    )
    path = collect_messages(cfg, [(s.id, s.task) for s in samples],
                            progress=lambda done, total: ctx.log(f"sender {cfg.sender}: {done}/{total} messages"))
    out = Messages(load_messages(path))
    out.key = path.name
    return out
