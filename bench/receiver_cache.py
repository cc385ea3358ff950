"""Receiver time per turn: KV-cached turns vs re-encoding the whole history each turn.

Plays one ALFWorld-style conversation on the offline SmolLM2 receiver with both paths
(same greedy replies) and prints the time of turns 1, 10 and 20 and their ratio.
Usage: python bench/receiver_cache.py [--turns 20] [--reply-tokens 24]
"""

from __future__ import annotations

import argparse
import time

import torch

from interlat_bench.benchmarks.base import Sample
from interlat_bench.harness import models
from interlat_bench.harness.generation import Decoding
from interlat_bench.methods.base import Message
from interlat_bench.methods.receiver import ReceiverAgent

TASK = ("You are in the middle of a room. Looking quickly around you, you see a cabinet 1, a coffeemachine 1, "
        "a countertop 1, a countertop 2, a drawer 1, a fridge 1, a sinkbasin 1, and a toaster 1.\n"
        "Your task is to: put a clean mug in coffeemachine.")
PLAN = "1. Find a mug. 2. Take it to the sinkbasin and clean it. 3. Put it in the coffeemachine."


def play(agent: ReceiverAgent, turns: int) -> tuple[list[float], list[str]]:
    agent.begin("Interact with a household to solve a task. " + TASK, Message(kind="text", text=PLAN),
                Sample("bench", TASK))
    times, replies = [], []
    for t in range(turns):
        obs = None if t == 0 else f"Observation: You arrive at countertop {t}. On it, you see a fork {t}, a knife {t}."
        t0 = time.perf_counter()
        replies.append(agent.respond(obs))
        times.append(time.perf_counter() - t0)
    return times, replies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--turns", type=int, default=20)
    ap.add_argument("--reply-tokens", type=int, default=24)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    lm = models.load(args.model, dtype="float32")
    dec = Decoding(max_new_tokens=args.reply_tokens)
    play(ReceiverAgent(lm, dec), 2)  # warm-up
    cached, r1 = play(ReceiverAgent(lm, dec), args.turns)
    full, r2 = play(ReceiverAgent(lm, dec, reencode=True), args.turns)
    same = sum(a == b for a, b in zip(r1, r2))
    print(f"receiver {args.model}, {args.reply_tokens} reply tokens per turn, device {models.device()}, "
          f"{torch.get_num_threads()} threads; identical replies: {same}/{args.turns}")
    print(f"{'turn':>5} {'cached ms':>10} {'re-encode ms':>13} {'speed-up':>9}")
    for turn in (1, 10, 20):
        if turn <= args.turns:
            c, f = cached[turn - 1] * 1000, full[turn - 1] * 1000
            print(f"{turn:>5} {c:>10.0f} {f:>13.0f} {f / c:>8.1f}x")
    print(f"{'all':>5} {sum(cached) * 1000:>10.0f} {sum(full) * 1000:>13.0f} {sum(full) / sum(cached):>8.1f}x")


if __name__ == "__main__":
    main()
