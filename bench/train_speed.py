"""Receiver training speed: trained tokens/s and the share of padding, with batches in random
order (what the Trainer does by default) and grouped by length (``group_by_length``, on in
the CPU presets: ``trainers.receiver.LengthBatches``).

Run: ``MATH_DATA=... ALFWORLD_DATA=... python bench/train_speed.py [--receiver smollm2-135m]
[--task alfworld --n-train 16 --max-len 768] [--task probe --n-train 32]``.

For each task: the `no_comm` receiver's real training conversations (the expert's ALFWorld
games, the probe's tasks) with the task's preset, then
- padding share: padded positions / all positions of the right-padded batches of one epoch,
  for the grouped order the trainer uses, and for random orders (the mean of 20 seeded
  permutations, as the Trainer's RandomSampler draws one);
- one epoch of the project's trainer (``_fit``: transformers Trainer, our losses) from the
  same initial weights, random order then grouped, each on a fresh copy of the model:
  wall time and tokens/s, where tokens are the conversations' real (non-padding) positions.
Both trainings see the same examples the same number of times; only the batching differs.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from interlat_bench.harness.core import conversation as conv
from interlat_bench.harness.core import models
from interlat_bench.harness.core.registry import benchmarks, methods
from interlat_bench.trainers import receiver as rc


def random_padding(examples, batch_size: int, draws: int = 20) -> float:
    shares = [rc.padding_share(examples, torch.randperm(len(examples), generator=torch.Generator().manual_seed(s))
                               .tolist(), batch_size) for s in range(draws)]
    return sum(shares) / len(shares)


def grouped_order(examples, cfg) -> list[int]:
    return list(rc.LengthBatches([rc.sequence_length(ex) for ex in examples], cfg.batch_size, cfg.seed))


def hf_grouped_order(examples, cfg) -> list[int]:
    from transformers.trainer_pt_utils import LengthGroupedSampler

    return list(LengthGroupedSampler(cfg.batch_size, lengths=[rc.sequence_length(ex) for ex in examples],
                                     generator=torch.Generator().manual_seed(cfg.seed)))


def train_once(receiver: str, examples, cfg) -> float:
    lm = models.load(receiver, dtype="float32", seed=cfg.seed)
    bop, eop = conv.add_slot_tokens(lm)
    module = rc.SlotReceiver(lm.model, None, "none", bop, eop, cfg.weights(), seed=cfg.seed).train()
    start = time.perf_counter()
    rc._fit(module, examples, cfg, deepspeed=None, label=f"no_comm ({'grouped' if cfg.group_by_length else 'random'})")
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--receiver", default="smollm2-135m")
    ap.add_argument("--task", action="append", help="probe, alfworld or math (repeatable; default probe and alfworld)")
    ap.add_argument("--n-train", type=int, default=16)
    ap.add_argument("--max-len", type=int, default=None, help="default: the task's preset")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--no-train", action="store_true", help="padding shares only")
    args = ap.parse_args()
    tok = models.tokenizer(args.receiver)
    for task in args.task or ["probe", "alfworld"]:
        bench = benchmarks.get(task)({})
        method = methods.get("no_comm")({"preset": args.preset, "n_train": args.n_train})
        cfg = method.train_config(bench)
        if args.max_len:
            cfg = replace(cfg, max_len=args.max_len)
        examples = rc.build_examples(tok, bench.train_samples(limit=cfg.n_train), {}, "none", cfg)
        tokens = sum(rc.sequence_length(ex) for ex in examples)
        order = grouped_order(examples, cfg)
        print(f"{task}: {len(examples)} conversations, {tokens} tokens ({tokens / len(examples):.0f} per "
              f"conversation, {min(map(rc.sequence_length, examples))} to {max(map(rc.sequence_length, examples))}), "
              f"batch {cfg.batch_size}, max_len {cfg.max_len}")
        print(f"  padding share: random order {random_padding(examples, cfg.batch_size):.1%}, "
              f"grouped {rc.padding_share(examples, order, cfg.batch_size):.1%} (transformers' "
              f"LengthGroupedSampler: {rc.padding_share(examples, hf_grouped_order(examples, cfg), cfg.batch_size):.1%})")
        if args.no_train:
            continue
        took = {}
        for grouped in (False, True):
            took[grouped] = train_once(args.receiver, examples, replace(cfg, group_by_length=grouped))
            print(f"  one epoch, {'grouped' if grouped else 'random '}: {took[grouped]:.1f} s, "
                  f"{tokens / took[grouped]:.0f} tokens/s")
        print(f"  grouped / random time: {took[True] / took[False]:.2f} (speed-up {took[False] / took[True]:.2f}x)")


if __name__ == "__main__":
    main()
