"""Sender time of each latent-communication family next to Interlat's collector, on the same probe
tasks, in one run: ratios to the Interlat collector's time per task.

Run: ``python bench/family_speed.py [--tasks 32] [--rounds 2] [--setting n_facts=4 --setting n_options=8]``.

Interlat: ``collect_messages`` (batched greedy plans with the probe's plan length, last-layer
states kept, written to a throwaway cache). The families: their ``collectors.<family>.send`` as
`run` calls it (``kv.BATCH`` tasks per left-padded batch). Time per task = wall time / tasks, as waited for (CUDA
synchronised); the best of ``--rounds`` rounds, the paths alternating so machine load drifts alike.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from interlat_bench.benchmarks.probe import ProbeBenchmark
from interlat_bench.collectors import activation, cipher, kv_share, latentmas
from interlat_bench.collectors import messages as mc
from interlat_bench.harness.core.generation import Decoding
from interlat_bench.harness.core.models import load
from interlat_bench.harness.core.params import key_values


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sender", default="smollm2-135m")
    ap.add_argument("--tasks", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--setting", action="append", default=[], help="probe setting key=value")
    args = ap.parse_args()
    bench = ProbeBenchmark(key_values(args.setting, "--setting"))
    plan_tokens = bench.method_defaults["plan_tokens"]
    lm = load(args.sender, dtype="float32")
    tasks = bench.sender_tasks(bench.samples("test", args.tasks))
    prompt = bench.planner_prompt
    paths = {
        "interlat (plan + latents)": lambda tmp: mc.collect_messages(
            mc.CollectConfig(sender_model=args.sender, prompt_template=prompt,
                             decoding=Decoding(greedy=True, max_new_tokens=plan_tokens)), tasks, out_root=tmp, loaded=lm),
        "latentmas 0 steps": lambda tmp: latentmas.send(lm, tasks, prompt_template=prompt, latent_steps=0,
                                                        realign_mode="matrix", latent_only=False),
        "latentmas 10 steps": lambda tmp: latentmas.send(lm, tasks, prompt_template=prompt, latent_steps=10,
                                                         realign_mode="matrix", latent_only=False),
        "latentmas 40 steps": lambda tmp: latentmas.send(lm, tasks, prompt_template=prompt, latent_steps=40,
                                                         realign_mode="matrix", latent_only=False),
        "kv_share all": lambda tmp: kv_share.send(lm, tasks, prompt_template=prompt, layers="all"),
        "cipher": lambda tmp: cipher.send(lm, tasks, prompt_template=prompt, max_new_tokens=plan_tokens,
                                          temperature=0.7),
        "activation": lambda tmp: activation.send(lm, tasks, prompt_template=prompt, k=-6),
    }
    best = {name: float("inf") for name in paths}
    for _ in range(args.rounds):
        for name, run in paths.items():
            with tempfile.TemporaryDirectory() as tmp:
                sync()
                t0 = time.perf_counter()
                run(tmp)
                sync()
                best[name] = min(best[name], (time.perf_counter() - t0) / len(tasks))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    base = best["interlat (plan + latents)"]
    print(f"{args.sender} on {device}, {len(tasks)} probe tasks {dict(bench.params) or '(default)'}, "
          f"plans up to {plan_tokens} tokens, best of {args.rounds} rounds, time per task as waited for")
    for name, t in best.items():
        print(f"{name:>26}: {1000 * t:8.1f} ms/task  {t / base:5.2f}x the Interlat collector")


if __name__ == "__main__":
    main()
