"""MATH evaluation throughput: one problem at a time vs replies decoded in batches.

Plays the first ``--n`` math500 problems with the offline SmolLM2 as an untrained receiver
(greedy, MATH's 320-token cap), the way ``interlat-bench run`` evaluates them:
- before: one problem at a time, with prompt lookup on (what ``--eval-batch 1`` does);
- after: ``ReceiverAgent.prefetch`` over batches of ``--batches`` (``--eval-batch N``).
Prints samples/s (problems graded per second of wall time, grading included), the ratio to
one at a time, and how many replies equal the one-at-a-time reply (greedy decoding of a
padded batch may differ from the unpadded row by float rounding).
Usage: MATH_DATA=... python bench/eval_speed.py [--n 16] [--batches 4,8,16] [--max-new-tokens 320]
"""

from __future__ import annotations

import argparse
import time

import torch

from interlat_bench.benchmarks.math import MathBenchmark
from interlat_bench.harness.core import models
from interlat_bench.harness.core.generation import Decoding
from interlat_bench.methods.agents import ReceiverAgent
from interlat_bench.methods.base import NO_MESSAGE


def evaluate(lm, dec, samples, batch: int) -> tuple[float, list[str], int, int]:
    """Wall seconds, the replies, how many problems were solved and how many replies the
    token cap cut."""
    bench = MathBenchmark()
    agent = ReceiverAgent(lm, dec)
    replies, solved, cut = [], 0, 0
    t0 = time.perf_counter()
    for at in range(0, len(samples), batch):
        chunk = samples[at:at + batch]
        if len(chunk) > 1:
            agent.prefetch([(bench.single_reply_prompt(s), NO_MESSAGE, s) for s in chunk])
        for s in chunk:
            record = bench.play(s, agent, NO_MESSAGE)
            replies.append(record.metrics["output"])
            solved += bool(record.success)
            cut += record.metrics["truncated"]
    return time.perf_counter() - t0, replies, solved, cut


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--batches", default="4,8,16")
    ap.add_argument("--max-new-tokens", type=int, default=MathBenchmark.reply_tokens)
    ap.add_argument("--model", default="smollm2-135m")
    args = ap.parse_args()
    torch.manual_seed(0)
    lm = models.load(args.model, dtype="float32")
    samples = MathBenchmark().samples("math500", args.n)
    print(f"{args.model} fp32 on {torch.get_num_threads()} threads, {len(samples)} math500 problems, "
          f"greedy, {args.max_new_tokens} tokens at most per reply")
    lookup = Decoding(max_new_tokens=args.max_new_tokens)  # prompt lookup: on for one row
    base_s, base_replies, solved, cut = evaluate(lm, lookup, samples, 1)
    print(f"one at a time (prompt lookup): {len(samples) / base_s:.3f} samples/s ({base_s:.0f} s, {solved} solved; "
          f"{cut}/{len(samples)} replies cut at the cap)")
    for batch in (int(b) for b in args.batches.split(",")):
        secs, replies, solved, _ = evaluate(lm, lookup, samples, batch)
        same = sum(a == b for a, b in zip(replies, base_replies, strict=True))
        print(f"batches of {batch:>2}: {len(samples) / secs:.3f} samples/s ({secs:.0f} s, {solved} solved), "
              f"{base_s / secs:.2f}x one at a time; {same}/{len(samples)} replies identical to one at a time")


if __name__ == "__main__":
    main()
