"""The channel probe as a ladder of difficulty, timed: how much of what the plan says does each
channel carry as the facts and options grow?

Run: ``python bench/probe_ladder.py [--facts 1,2,4,8] [--options 4,8] [--methods latent,text,no_comm]
[--seeds 0] [--keep DIR] [-- extra run options]``.

One ``interlat-bench run --tasks probe --setting n_facts=F --setting n_options=O`` per rung, all
into one results database, with message and checkpoint caches that start empty unless
``--keep`` names a folder used before (so collection and training are timed). Prints per rung
the wall time, then the ladder (``results.report.probe_ladder``): accuracy and fidelity
(accuracy where the plan states the target's own fact) with 95% intervals and n, chance, and
two checks per rung: latent's fidelity against text's (the gap in points), and whether
latent's accuracy interval lies above no_comm's where text's does. Not a test: the numbers
depend on the machine. ``report`` on the database draws the ladder plot (ladder.svg).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--facts", default="1,2,4,8")
    ap.add_argument("--options", default="4,8")
    ap.add_argument("--methods", default="latent,text,no_comm")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--keep", default=None, help="folder for caches and results (default: a temporary one)")
    args, extra = ap.parse_known_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="probe-ladder-"))
    env = {**os.environ, "INTERLAT_CACHE": str(work / "cache"), "INTERLAT_RESULTS": str(work / "results")}
    env.setdefault("INTERLAT_MODELS", str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                                          / "interlat-bench" / "models"))
    walls = {}
    for n_options in _ints(args.options):
        for n_facts in _ints(args.facts):
            cmd = [sys.executable, "-m", "interlat_bench.harness.entry", "run", "--methods", args.methods,
                   "--tasks", "probe", "--seeds", args.seeds, "--setting", f"n_facts={n_facts}",
                   "--setting", f"n_options={n_options}", "--no-leaderboard", *[a for a in extra if a != "--"]]
            start = time.perf_counter()
            proc = subprocess.run(cmd, env=env, text=True, capture_output=True)
            walls[(n_facts, n_options)] = time.perf_counter() - start
            if proc.returncode != 0:
                sys.exit(f"rung n_facts={n_facts} n_options={n_options} failed ({proc.returncode}):\n"
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
            print(f"rung {n_facts} facts x {n_options} options: {walls[(n_facts, n_options)] / 60:.1f} min wall "
                  f"({args.methods}, seeds {args.seeds}; collection, training and evaluation)", flush=True)
    print(f"ladder: {sum(walls.values()) / 60:.1f} min wall in all, {os.cpu_count()} CPUs; caches and results in "
          f"{work}")
    print_ladder(work / "results" / "interlat.duckdb")


def _pct(value, lo, hi, n) -> str:
    if value is None or value != value:  # None or NaN: nothing to show
        return "-"
    ci = "" if lo is None or lo != lo else f" [{100 * lo:5.1f}, {100 * hi:5.1f}]"
    return f"{100 * value:5.1f}{ci} n={n}"


def print_ladder(db: Path) -> None:
    from interlat_bench.results.report import probe_ladder

    ladder = probe_ladder(db)
    print(f"{'rung':<16} {'configuration':<34} {'chance':>6} {'accuracy % [95% CI]':>28} "
          f"{'fidelity % [95% CI]':>28} {'seeds':>5}")
    for _, line in ladder.iterrows():
        print(f"{line['n_facts']} facts {line['n_options']} opts".ljust(16), f"{line['row'][:34]:<34}",
              f"{100 * line['chance']:5.1f}%", f"{_pct(line['accuracy'], line['accuracy_lo'], line['accuracy_hi'], line['accuracy_n']):>28}",
              f"{_pct(line['fidelity'], line['fidelity_lo'], line['fidelity_hi'], line['fidelity_n']):>28}",
              f"{line['seeds']:>5}")
    # The checks compare the plain methods (rows named by the method alone) of one rung.
    for (n_facts, n_options), rung in ladder.groupby(["n_facts", "n_options"]):
        by = {line["row"]: line for _, line in rung.iterrows()}
        if not {"latent", "text"} <= set(by):
            continue
        lat, txt = by["latent"], by["text"]
        gap = None if lat["fidelity"] is None or txt["fidelity"] is None else 100 * (lat["fidelity"] - txt["fidelity"])
        said = f"rung {n_facts}x{n_options}: latent fidelity - text fidelity = " + \
            ("-" if gap is None else f"{gap:+.1f} points ({'within 5' if gap >= -5 else 'NOT within 5'})")
        if "no_comm" in by:
            ceiling = by["no_comm"]["accuracy_hi"]
            said += (f"; accuracy interval above no_comm's: text {'yes' if txt['accuracy_lo'] > ceiling else 'no'}, "
                     f"latent {'yes' if lat['accuracy_lo'] > ceiling else 'no'}")
        print(said)


if __name__ == "__main__":
    main()
