"""ALFWorld receivers on held-out training games: a development set for training presets.

Choosing a training setting by its score on the seen/unseen games would tune on the
evaluation games. This script trains (or reuses from the cache) a receiver with the `cpu`
preset and the changes given, then plays the last games of the training split (two of each
task type with the default --games 12), which no n_train up to 600 - games trains on, and
prints wins and the share of valid actions (the engine did not answer "Nothing happens.")
with 95% Wilson intervals over turns (turns of one game are not independent: read the
interval as a lower bound on the uncertainty).
Usage: ALFWORLD_DATA=... python bench/alfworld_heldout.py [--method no_comm] [--games 12]
       [--set max_len=1536 --set epochs=2] [--checkpoint FOLDER]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from interlat_bench.benchmarks.alfworld import AlfworldBenchmark, task_text
from interlat_bench.benchmarks.alfworld_env import game_id, game_paths, task_type
from interlat_bench.benchmarks.base import Sample
from interlat_bench.harness.grid import expand
from interlat_bench.harness.runner import Cell
from interlat_bench.results.leaderboard import wilson
from interlat_bench.trainers import config as rc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="no_comm", help="no_comm, text or latent")
    ap.add_argument("--games", type=int, default=12)
    ap.add_argument("--set", action="append", default=[], help="cpu preset change key=value (JSON value)")
    ap.add_argument("--checkpoint", help="play this trained receiver folder instead of training one")
    args = ap.parse_args()
    changes = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    rc.PRESETS["cpu"] = replace(rc.PRESETS["cpu"], **changes)
    [spec] = expand(methods_csv=args.method, tasks_csv="alfworld", splits_csv="seen", seeds=[0],
                    sender_model="smollm2-135m", receiver_model="smollm2-135m", dtype="float32",
                    method_params={"preset": "cpu"})
    bench = AlfworldBenchmark(dict(spec.benchmark_params))
    cell = Cell(spec, bench, log=lambda m: print(m, flush=True), checkpoint=Path(args.checkpoint) if args.checkpoint else None)
    method = cell.method
    cfg = method.train_config(bench)
    trained_on = {s.id for s in bench.train_samples(limit=cfg.n_train, detours=cfg.detours)}
    # The last games of the training split (game_paths takes task types in turn, so these are
    # spread over the types too): the same development set for any n_train below 600 - games.
    held = game_paths("train")[-args.games:]
    if trained_on & {game_id(p) for p in held}:
        raise SystemExit(f"n_train={cfg.n_train} trains on the last {args.games} games: lower one of them")
    samples = [Sample(game_id(p), task_text(p), {"game": str(p), "task_type": task_type(p)}) for p in held]
    start = time.perf_counter()
    folder = cell.checkpoint()
    print(f"receiver {folder} ({time.perf_counter() - start:.0f} s); preset cpu with {changes or 'no changes'}; "
          f"{len(samples)} held-out training games (not among its {len(trained_on)})", flush=True)
    agent, messages = cell.agent(), cell.messages(samples)
    wins = valid = turns = 0
    for s in samples:
        record = bench.play(s, agent, method.message_for(s, messages, spec.seed))
        wins += bool(record.success)
        turns += record.metrics["turns"]
        valid += record.metrics["turns"] - record.metrics["invalid_actions"]
        print(f"  {s.id}: won={record.success} valid {record.metrics['valid_actions']:.2f} "
              f"first actions {record.metrics['actions'][:4]}", flush=True)
    lo, hi = wilson(wins, len(samples))
    vlo, vhi = wilson(valid, turns)
    print(f"wins {wins}/{len(samples)} [{lo:.0%}, {hi:.0%}]; valid actions {valid}/{turns} = "
          f"{valid / max(turns, 1):.1%} [{vlo:.1%}, {vhi:.1%}]")


if __name__ == "__main__":
    main()
