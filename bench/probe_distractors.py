"""Where on the probe a receiver loses what the plan states: plans with a distractor or without.

Run: ``python bench/probe_distractors.py DB[:METHODS] [DB[:METHODS] ...] --facts F --options O
[--methods latent,text]``, with DB results databases holding finished probe runs at that rung
(every seed found is used); ``:METHODS`` (comma-separated) takes only those methods' runs from
that database, e.g. a new latent receiver's database beside an older one's text runs.

Fidelity (accuracy where the plan states the target's own fact) is split by whether the plan
also gives another of the sample's objects another colour (``distractor_in_plan``: "The object
is in the blue box. The coin is in the red box." when the coin is not the target). On such a
plan the reader must tell the named object from the target; on a clean one any colour it
finds is the answer. Printed per method and seed, pooled over seeds, and the first method
against the second on the same (sample, seed) pairs with the exact McNemar test. The test
samples are regenerated from the runs' settings (they do not depend on the training seed).
Not a test: a diagnostic of recorded runs.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np

from interlat_bench.benchmarks.probe import ProbeBenchmark, states_distractor
from interlat_bench.results.leaderboard import wilson
from interlat_bench.results.stats import mcnemar_exact
from interlat_bench.results.store import Store


def runs_at(db: str, n_facts: int, n_options: int, methods: list[str]):
    """(method, seed, benchmark params, {sample_id: (fidelity, plan)}) of each finished run."""
    with Store(db).reader() as con:
        rows = con.execute("SELECT run_key, method, seed, spec FROM runs WHERE benchmark = 'probe' "
                           "AND status = 'complete'").fetchall()
        for key, method, seed, spec in rows:
            params = dict(json.loads(spec)["benchmark_params"])
            if method not in methods or (int(params.get("n_facts", 1)), int(params.get("n_options", 4))) != (
                    n_facts, n_options):
                continue
            samples = {}
            for sample_id, metrics in con.execute("SELECT sample_id, metrics FROM samples WHERE run_key = ?",
                                                  [key]).fetchall():
                m = json.loads(metrics) if isinstance(metrics, str) else metrics
                if m.get("fidelity") is not None:
                    samples[sample_id] = (int(m["fidelity"]), m["transcript"][0]["content"])
            yield method, seed, params, samples


def rate(values: list[int]) -> str:
    if not values:
        return "-"
    lo, hi = wilson(sum(values), len(values))
    return f"{100 * sum(values) / len(values):5.1f}% ({sum(values)}/{len(values)}) [{100 * lo:.1f}, {100 * hi:.1f}]"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("db", nargs="+")
    ap.add_argument("--facts", type=int, required=True)
    ap.add_argument("--options", type=int, required=True)
    ap.add_argument("--methods", default="latent,text")
    args = ap.parse_args()
    methods = args.methods.split(",")
    outcome: dict[str, dict[tuple[str, int], tuple[int, bool]]] = defaultdict(dict)
    for arg in args.db:
        db, _, only = arg.partition(":")
        wanted = [m for m in methods if not only or m in only.split(",")]
        for method, seed, params, samples in runs_at(db, args.facts, args.options, wanted):
            if any(s == seed for _, s in outcome[method]):
                raise SystemExit(f"{db}: a second {method} run with seed {seed} at {args.facts} x {args.options}; "
                                 f"name the database to take {method} from (DB:{method})")
            tests = {s.id: s for s in ProbeBenchmark(params).samples("test")}
            for sample_id, (fidelity, plan) in samples.items():
                outcome[method][(sample_id, seed)] = (fidelity, states_distractor(plan, tests[sample_id]))
    if not outcome:
        raise SystemExit(f"no finished probe run of {args.methods} at {args.facts} x {args.options} in {args.db}")
    print(f"probe {args.facts} x {args.options}: fidelity [95% Wilson] on plans with a distractor / without")
    for method in methods:
        seeds = sorted({seed for _, seed in outcome[method]})
        for seed in [*seeds, None]:
            got = [v for (_, s), v in outcome[method].items() if seed is None or s == seed]
            label = f"seeds {','.join(map(str, seeds))} pooled" if seed is None else f"seed {seed}"
            print(f"  {method:>8} {label:>18}: with {rate([f for f, d in got if d])}   "
                  f"without {rate([f for f, d in got if not d])}")
    if len(methods) >= 2:
        first, second = methods[:2]
        for with_distractor in (True, False):
            shared = sorted(k for k, (_, d) in outcome[first].items() if d == with_distractor and k in outcome[second])
            if shared:
                test = mcnemar_exact(np.array([outcome[first][k][0] for k in shared]),
                                     np.array([outcome[second][k][0] for k in shared]))
                print(f"  {'with' if with_distractor else 'without'} a distractor, {first} vs {second} on "
                      f"{test.n} (sample, seed) pairs: only {first} {test.only_row}, only {second} "
                      f"{test.only_baseline}, exact McNemar p = {test.p:.2g}")


if __name__ == "__main__":
    main()
