"""ALFWorld throughput with an LLM agent: one game at a time, games in lockstep, processes.

Runs the same cell (by default ``no_comm_zeroshot``: the offline SmolLM2 as the agent;
``--method no_comm --param preset=cpu`` plays the receiver trained with the ``cpu`` preset,
from the cache or trained first; greedy, the paper's 20-step cap) on the first ``--games``
seen games, each way into a fresh results database:
- one game at a time (``--episode-batch 1``; single-row turns use prompt lookup);
- games in lockstep (``--episode-batch N`` for each N of ``--batches``): every turn's replies
  of the games still playing are decoded in one batch on a shared KV cache;
- ``--episode-workers W`` processes, one game at a time each (its own model copy, cores / W
  threads), so one game's engine runs while another decodes.
Prints episodes per second of wall time (model loading included), the ratio to one at a
time, the receiver's and the engine's share of the episodes' time, and how many episodes
played the same actions as one at a time.
Usage: ALFWORLD_DATA=... python bench/alfworld_episodes.py [--games 12] [--batches 4,12] [--workers 2]
       [--method no_comm --param preset=cpu]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import duckdb

from interlat_bench.harness.grid import expand
from interlat_bench.harness.runner import run_grid


def play(spec, db: Path, episode_batch: int, workers: int) -> tuple[float, dict, dict]:
    start = time.perf_counter()
    run_grid([spec], db, log=lambda _: None, episode_batch=episode_batch, episode_workers=workers)
    secs = time.perf_counter() - start
    con = duckdb.connect(str(db), read_only=True)
    try:
        actions = dict(con.execute("SELECT sample_id, metrics->>'actions' FROM samples").fetchall())
        stages = dict(con.execute("SELECT stage, sum(ms) FROM timings GROUP BY stage").fetchall())
    finally:
        con.close()
    return secs, actions, stages


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--games", type=int, default=12)
    ap.add_argument("--batches", default="4,12", help="lockstep batch sizes (comma-separated)")
    ap.add_argument("--workers", type=int, default=2, help="episode worker processes (0: skip)")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--method", default="no_comm_zeroshot")
    ap.add_argument("--param", action="append", default=[], help="method setting key=value")
    args = ap.parse_args()
    params = dict(p.split("=", 1) for p in args.param)
    [spec] = expand(methods_csv=args.method, tasks_csv="alfworld", splits_csv="seen", seeds=[0],
                    sender_model=args.model, receiver_model=args.model, dtype="float32", limit=args.games,
                    method_params=params)
    print(f"{args.method} {params or ''} ({args.model}) as the agent, {args.games} seen ALFWorld games, "
          "greedy, 20 steps at most")
    ways = [("one at a time", 1, 1)] + [(f"lockstep, batches of {b}", int(b), 1) for b in args.batches.split(",")]
    if args.workers > 1:
        ways.append((f"{args.workers} episode workers", 1, args.workers))
    print(f"{'way':<26}{'episodes/s':>11}{'wall s':>8}{'vs one':>8}{'receiver':>10}{'engine':>8}{'same':>8}")
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.method != "no_comm_zeroshot":  # train or load the receiver before any timing
            from interlat_bench.harness.runner import Cell

            Cell(spec).checkpoint()
        for i, (label, batch, workers) in enumerate(ways):
            secs, actions, stages = play(spec, Path(tmp) / str(i) / "r.duckdb", batch, workers)
            base = base or (secs, actions)
            same = sum(actions.get(k) == v for k, v in base[1].items())
            # Shares of the summed per-episode wall times (in lockstep each episode's receiver
            # time is its batch's, as it waited for it).
            wall = stages.get("wall", 0) or 1
            print(f"{label:<26}{args.games / secs:>11.3f}{secs:>8.0f}{base[0] / secs:>7.2f}x"
                  f"{stages.get('receiver', 0) / wall:>10.0%}{stages.get('env', 0) / wall:>8.0%}"
                  f"{same:>5}/{len(base[1])}")


if __name__ == "__main__":
    main()
