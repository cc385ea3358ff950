"""Communication time: the sender's full plan (latents captured while it writes) against K
latent steps, on the same tasks, in one run (the paper: 9.19 s against 0.39 s at K = 8, 23.6x,
Qwen2.5-7B on a GPU).

Run: ``ALFWORLD_DATA=../shared/data/alfworld python bench/comm_time.py [--tasks 32] [--k 8,16,32,64,128]``.

Both paths are the harness's own: ``collect_messages`` (batched generation with the paper's
ALFWorld sampling, 128 plan tokens, last-layer states kept, written to a throwaway cache) and
``send_latent_steps`` (batched K steps after LATENT_STEP_PROMPT, the untrained head: a trained
student runs the same loop at the same cost). Time per task = wall time / tasks, as waited
for (CUDA synchronised). Rounds alternate the paths so machine load drifts alike.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from interlat_bench.benchmarks.alfworld import AlfworldBenchmark
from interlat_bench.collectors import messages as mc
from interlat_bench.collectors.latent_steps import send_latent_steps
from interlat_bench.harness.core.generation import Decoding
from interlat_bench.harness.core.models import load
from interlat_bench.harness.core.prompts import (
    ALFWORLD_PLAN_PROMPT,
    PAPER_TOP_K,
    PAPER_TOP_P,
)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sender", default="smollm2-135m")
    ap.add_argument("--tasks", type=int, default=32)
    ap.add_argument("--plan-tokens", type=int, default=128)
    ap.add_argument("--k", default="8,16,32,64,128")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    ks = [int(k) for k in args.k.split(",")]
    sender = load(args.sender, dtype="float32")
    samples = AlfworldBenchmark().samples("seen", args.tasks)
    tasks = [(s.id, s.task) for s in samples]
    dec = Decoding(greedy=False, temperature=AlfworldBenchmark.plan_temperature, top_p=PAPER_TOP_P, top_k=PAPER_TOP_K,
                   max_new_tokens=args.plan_tokens)
    full, steps, rows = [], {k: [] for k in ks}, []
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = mc.CollectConfig(sender_model=args.sender, prompt_template=ALFWORLD_PLAN_PROMPT, decoding=dec, seed=r)
            sync()
            t0 = time.perf_counter()
            folder = mc.collect_messages(cfg, tasks, out_root=tmp, loaded=sender)
            sync()
            full.append((time.perf_counter() - t0) / len(tasks))
            rows += [m.rows for m in mc.load_messages(folder).values()]
        for k in ks:
            sync()
            t0 = time.perf_counter()
            send_latent_steps(sender.model, sender.tokenizer, tasks, k)
            sync()
            steps[k].append((time.perf_counter() - t0) / len(tasks))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    best_full = min(full)
    print(f"{args.sender} on {device}, {len(tasks)} ALFWorld seen tasks, best of {args.rounds} rounds, "
          f"time per task as waited for (batched)")
    print(f"full plan + latents: {1000 * best_full:8.1f} ms/task  ({sum(rows) / len(rows):.1f} rows on average, "
          f"up to {args.plan_tokens})")
    for k in ks:
        t = min(steps[k])
        print(f"K = {k:>3} latent steps: {1000 * t:8.1f} ms/task  full / K = {best_full / t:5.1f}x")


if __name__ == "__main__":
    main()
