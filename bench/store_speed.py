"""Results store speed: ingest of many sample rows, then the leaderboard over them.

Run: ``python bench/store_speed.py [--samples 100000] [--runs 100]``.

Synthetic rows written as ``run_cell`` writes them: ``--runs`` runs (5 methods x 2 benchmarks x
seeds), one ``run.json`` each, and each sample (a sample row with a metrics JSON of the usual
keys and a short transcript, plus its timing rows) added with ``ShardWriter.add``. Two
layouts, each ingested into its own database:

- a fast stream (reference policies, cached messages): samples come faster than one per
  second, so ``add`` writes a shard per second of samples (here: per flush interval);
- slow samples (an LLM episode takes seconds): one shard file per sample.

The files are written with fsync off (writing them is not what is measured). Then, timed
once each:

- ingest: ``interlat_bench.results.shards.ingest`` of every shard into a new DuckDB file;
- leaderboard: ``leaderboard(metric="success")`` and ``leaderboard(metric="steps")`` over all runs;
- the same leaderboard a second time (DuckDB's file cache warm).

Targets (issue: 100k rows): ingest under 5 s, a leaderboard under 1 s.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from interlat_bench.harness.core import atomic
from interlat_bench.harness.core.runspec import RunSpec
from interlat_bench.results.leaderboard import leaderboard
from interlat_bench.results.shards import ShardWriter, ingest
from interlat_bench.results.store import Store

METHODS = ("latent", "text", "no_comm", "truncate", "whitenoise")
BENCHMARKS = (("math", "math500"), ("alfworld", "seen"))


def write_shards(root: Path, n_samples: int, n_runs: int, one_file_per_sample: bool) -> None:
    rng = random.Random(0)
    per_run = n_samples // n_runs
    fsync = atomic.os.fsync
    atomic.os.fsync = lambda fd: None  # the files, not their durability, are what ingest reads
    try:
        for r in range(n_runs):
            method = METHODS[r % len(METHODS)]
            benchmark, split = BENCHMARKS[(r // len(METHODS)) % len(BENCHMARKS)]
            seed = r // (len(METHODS) * len(BENCHMARKS))
            spec = RunSpec.make(method=method, benchmark=benchmark, split=split, receiver_model="smollm2-135m",
                                sender_model="smollm2-135m", seed=seed)
            writer = ShardWriter(root, spec.run_key)
            writer.write_run({"method": method, "benchmark": benchmark, "split": split, "seed": seed,
                              "sender_model": "smollm2-135m", "receiver_model": "smollm2-135m", "spec": spec.to_json(),
                              "status": "complete"})
            for i in range(per_run):
                ok = rng.random() < 0.4
                steps = rng.randint(3, 20)
                metrics = {"valid_actions": rng.random(), "truncated": 0, "replies": steps, "message_rows": 100,
                           "message_bytes": 115200, "transcript": [
                               {"role": "user", "content": "Observation: you see a drawer 1. " * 8},
                               {"role": "assistant", "content": "Thought: look.\nAction: go to drawer 1"}]}
                rows = ([{"sample_id": f"s{i:06d}", "success": ok, "score": float(ok), "steps": steps,
                          "metrics": metrics}],
                        [{"sample_id": f"s{i:06d}", "stage": stage, "ms": rng.random() * 1000}
                         for stage in ("receiver", "env", "wall")])
                if one_file_per_sample:
                    writer.append(*rows)
                else:
                    writer.add(*rows)
            writer.flush()
    finally:
        atomic.os.fsync = fsync


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=100)
    args = ap.parse_args()
    for per_sample in (False, True):
        layout = "one shard file per sample" if per_sample else "a fast stream (ShardWriter.add)"
        with tempfile.TemporaryDirectory(prefix="interlat-store-") as tmp:
            root, db = Path(tmp) / "shards", Path(tmp) / "interlat.duckdb"
            start = time.perf_counter()
            write_shards(root, args.samples, args.runs, per_sample)
            files = sum(1 for _ in root.glob("*/*.jsonl"))
            print(f"{layout}: {args.samples} samples of {args.runs} runs in {files} shard files, written in "
                  f"{time.perf_counter() - start:.1f} s (not a target)")
            start = time.perf_counter()
            counts = ingest(Store(db), root)
            ingest_s = time.perf_counter() - start
            print(f"  ingest: {counts['samples']} samples, {counts['timings']} timings, {counts['runs']} runs in "
                  f"{ingest_s:.2f} s ({counts['samples'] / ingest_s:,.0f} samples/s; target < 5 s)")
            for label in ("leaderboard success", "leaderboard steps", "leaderboard success again"):
                start = time.perf_counter()
                table = leaderboard(db, metric="steps" if "steps" in label else "success")
                took = time.perf_counter() - start
                cells = sum(1 for row in table.rows for c in row[1:] if not isinstance(c, str))
                print(f"  {label}: {len(table.rows)} rows x {len(table.columns)} columns ({cells} cells) in "
                      f"{took:.2f} s (target < 1 s)")


if __name__ == "__main__":
    main()
