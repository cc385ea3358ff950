"""ALFWorld throughput with an LLM agent: one process against ``--episode-workers N``.

Runs the same cell (``no_comm_zeroshot``: the offline SmolLM2 as the agent, greedy, the
paper's 20-step cap) on the first ``--games`` seen games, once in this process and once with
the episodes spread over N processes (each with its own copy of the model and cores / N
threads, so one game's engine runs while another decodes), each into a fresh results
database. Prints episodes per second of wall time (process start-up and model loading
included) and how many episodes played the same actions both ways.
Usage: ALFWORLD_DATA=... python bench/episode_workers.py [--games 6] [--workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import duckdb

from interlat_bench.harness.grid import expand
from interlat_bench.harness.runner import run_grid


def play(spec, db: Path, workers: int) -> tuple[float, dict]:
    start = time.perf_counter()
    run_grid([spec], db, log=lambda _: None, episode_workers=workers)
    secs = time.perf_counter() - start
    con = duckdb.connect(str(db), read_only=True)
    try:
        actions = dict(con.execute("SELECT sample_id, metrics->>'actions' FROM samples").fetchall())
    finally:
        con.close()
    return secs, actions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--games", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--model", default="smollm2-135m")
    args = ap.parse_args()
    [spec] = expand(methods_csv="no_comm_zeroshot", tasks_csv="alfworld", splits_csv="seen", seeds=[0],
                    sender=args.model, receiver=args.model, dtype="float32", limit=args.games)
    print(f"{args.model} as the agent, {args.games} seen ALFWorld games, greedy, 20 steps at most")
    with tempfile.TemporaryDirectory() as tmp:
        one_s, one = play(spec, Path(tmp) / "one" / "r.duckdb", 1)
        print(f"one process: {args.games / one_s:.3f} episodes/s ({one_s:.0f} s)")
        many_s, many = play(spec, Path(tmp) / "many" / "r.duckdb", args.workers)
    same = sum(one[k] == many.get(k) for k in one)
    print(f"{args.workers} episode workers: {args.games / many_s:.3f} episodes/s ({many_s:.0f} s), "
          f"{one_s / many_s:.2f}x one process; {same}/{len(one)} episodes with the same actions")


if __name__ == "__main__":
    main()
