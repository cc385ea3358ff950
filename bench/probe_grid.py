"""The channel probe grid, end to end, timed: does a working channel beat a broken one here?

Run: ``python bench/probe_grid.py [--methods latent,text,no_comm] [-- extra run options]``.

Runs ``interlat-bench run --methods ... --tasks probe`` with empty message and checkpoint
caches (so collection and training are included) and its own results database, times the
whole command as waited for, then prints per method: accuracy with its 95% Wilson interval
and n, the chance level, the share of plans that state the answer, and whether the
`latent` and `no_comm` intervals overlap. Not a test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from interlat_bench.harness.core.runspec import KEY_VERSION
from interlat_bench.results.leaderboard import wilson


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default="latent,text,no_comm")
    ap.add_argument("--keep", default=None, help="folder for caches and results (default: a temporary one)")
    args, extra = ap.parse_known_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="probe-grid-"))
    env = {**os.environ, "INTERLAT_CACHE": str(work / "cache"), "INTERLAT_RESULTS": str(work / "results")}
    env.setdefault("INTERLAT_MODELS", str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                                          / "interlat-bench" / "models"))
    cmd = [sys.executable, "-m", "interlat_bench.harness.entry", "run", "--methods", args.methods,
           "--tasks", "probe", "--no-leaderboard", *[a for a in extra if a != "--"]]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, text=True, capture_output=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    con = duckdb.connect(str(work / "results" / "interlat.duckdb"), read_only=True)
    rows = con.execute("""
        select r.method, r.spec, count(*), sum(case when s.error is null and s.success then 1 else 0 end),
               count(s.error), avg(try_cast(s.metrics->>'chance' as double)),
               avg(try_cast(s.metrics->>'answer_in_plan' as double)),
               avg(try_cast(s.metrics->>'message_rows' as double))
        from samples s join runs r using (run_key)
        where try_cast(r.spec->>'key_version' as integer) = ?  -- older key versions are other runs
        group by all order by 1, 2""", [KEY_VERSION]).fetchall()
    con.close()
    print(f"probe grid {args.methods}: {wall / 60:.1f} min wall (collection, training and evaluation; "
          f"{os.cpu_count()} CPUs); caches and results in {work}")
    print(f"{'row':<40} {'accuracy':>9} {'95% Wilson CI':>16} {'n':>5} {'errors':>7} {'chance':>7} "
          f"{'chance in CI':>13} {'plan states answer':>19} {'rows':>5}")
    intervals = {}
    for method, spec, n, k, errors, chance, in_plan, msg_rows in rows:
        spec = json.loads(spec)
        params = spec["method_params"]
        label = method + "".join(f"[{p}={params[p]}]" for p in ABLATION_PARAMS if p in params)
        if spec.get("receiver") != "smollm2-135m":  # another receiver: name it (and the sender, if any)
            label += f" {spec['sender'] + '->' if spec.get('sender') else 'receiver '}{spec['receiver']}"
        lo, hi = wilson(k, n)
        intervals[label] = (lo, hi)
        plan = "-" if in_plan is None else f"{100 * in_plan:.0f}%"
        print(f"{label:<40} {100 * k / n:>8.1f}% [{100 * lo:5.1f}, {100 * hi:5.1f}] {n:>5} {errors:>7} "
              f"{100 * chance:>6.1f}% {'yes' if lo <= chance <= hi else 'no':>13} {plan:>19} {msg_rows or 0:>5.1f}")
    # Per receiver: no_comm has no sender, so rows meet on the receiver's name.
    by_receiver: dict[str, dict[str, tuple]] = {}
    for label, ci in intervals.items():
        method, _, who = label.partition(" ")
        by_receiver.setdefault(who.rpartition("->")[2].removeprefix("receiver "), {})[method] = ci
    for receiver, rows in sorted(by_receiver.items()):
        if "latent" in rows and "no_comm" in rows:
            print(f"latent above no_comm with intervals apart{' (receiver ' + receiver + ')' if receiver else ''}: "
                  f"{'yes' if rows['latent'][0] > rows['no_comm'][1] else 'no'}")


# Method parameters that tell the rows of one ablation apart (truncate's rho, covnoise's a, ...).
ABLATION_PARAMS = ("rho", "a", "sigma", "k")


if __name__ == "__main__":
    main()
