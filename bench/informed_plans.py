"""How much of an informed sender's privileged facts does its plan pass on?

Run: ``python bench/informed_plans.py [--split seen] [--limit 8] [--plan-tokens 128]
[--greedy] [--sender smollm2-135m]``. Collects the sender's plans for the first games of an
ALFWorld split under ``--setting sender_view=expert`` (its planner prompt lists the handcoded
expert's winning actions, benchmarks.alfworld) with the settings the harness uses, and prints
per game how many of the expert's actions the plan restates word for word, and the total. A
channel can only carry what the plan holds: this bounds what `text` and `latent` can gain from
the informed view. Not a test: a measurement (plans are cached under $INTERLAT_CACHE).
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    from interlat_bench.benchmarks.alfworld import AlfworldBenchmark
    from interlat_bench.collectors.plans import collect_plans
    from interlat_bench.methods.sending import SENDER_DEFAULTS, plan_collection

    ap = argparse.ArgumentParser()
    ap.add_argument("--split", default="seen")
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--plan-tokens", type=int, default=SENDER_DEFAULTS["plan_tokens"])
    ap.add_argument("--greedy", action="store_true", help="greedy plans (default: the paper's sampling)")
    ap.add_argument("--sender", default="smollm2-135m")
    args = ap.parse_args()

    start = time.perf_counter()
    bench = AlfworldBenchmark({"sender_view": "expert"})
    samples = bench.samples(args.split, limit=args.limit)
    params = {**SENDER_DEFAULTS, "plan_tokens": args.plan_tokens, "plan_greedy": args.greedy}
    plans = collect_plans(plan_collection(params, bench, sender_model=args.sender, dtype="float32", seed=0),
                          bench.sender_tasks(samples))
    restated = listed = 0
    for sample in samples:
        actions = [line.split(". ", 1)[1] for line in sample.data["sender_facts"].splitlines() if line[:1].isdigit()]
        hits = sum(action in plans[sample.id].text.lower() for action in actions)
        restated, listed = restated + hits, listed + len(actions)
        print(f"{hits:3d}/{len(actions):3d}  {sample.id}")
    print(f"{args.sender}, {args.split}, {len(samples)} games, plan_tokens {args.plan_tokens}, "
          f"{'greedy' if args.greedy else 'sampled (paper)'}: {restated}/{listed} expert actions restated "
          f"({100 * restated / max(listed, 1):.1f}%), {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
