"""The sender's settings a method declares (``--param plan_tokens=...``) and the plan
collection they make (``harness.core.stages.PlanCollection``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from interlat_bench.harness.core.params import BOOL, OPTIONAL_POSITIVE_FLOAT, POSITIVE_INT
from interlat_bench.harness.core.prompts import PAPER_TOP_K, PAPER_TOP_P
from interlat_bench.harness.core.stages import PlanCollection

if TYPE_CHECKING:
    from interlat_bench.benchmarks.base import Benchmark

# Sender decoding (SPEC section 2: the paper samples plans with top_p 0.9, top_k 50,
# temperature 0.8 for MATH and 0.7 for ALFWorld: each benchmark's ``plan_temperature``). Seeded per
# task, so reproducible. plan_temperature None: the paper's temperature for the benchmark.
SENDER_DEFAULTS: dict[str, Any] = {"plan_tokens": 128, "plan_greedy": False, "plan_temperature": None}
SENDER_CHECKS = {"plan_tokens": POSITIVE_INT, "plan_greedy": BOOL, "plan_temperature": OPTIONAL_POSITIVE_FLOAT}


def plan_collection(params: dict[str, Any], benchmark: Benchmark, *, sender_model: str, dtype: str, seed: int,
                    keep_rows: int | None = None) -> PlanCollection:
    """How the sender writes its plans, from a method's sender settings in ``params`` and the
    benchmark's planner prompt and temperature."""
    return PlanCollection(sender_model=sender_model, dtype=dtype, prompt_template=benchmark.planner_prompt,
                          greedy=bool(params.get("plan_greedy")),
                          temperature=params.get("plan_temperature") or benchmark.plan_temperature,
                          top_p=PAPER_TOP_P, top_k=PAPER_TOP_K, max_new_tokens=int(params["plan_tokens"]), seed=seed,
                          keep_rows=keep_rows)
