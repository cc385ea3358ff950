"""Receiver time per turn: KV-cached turns vs re-encoding the whole history each turn.

Replays the observations of a real ALFWorld episode (alfworld's expert playing one game,
so the prompt and history have real lengths) to the offline SmolLM2 receiver on both
paths (greedy, so both write the same replies) and prints, for turns 1, 10 and 20, the
whole turn time and the time to the first token (prefill + one step: the part a cache
removes). Past the expert's last step (``--turns 40``) the observations are the engine's
"Nothing happens.", as for a receiver whose actions keep failing. Decoding the reply costs the same on both paths (prompt lookup, on by default,
shortens it on both), so the whole-turn ratio is bounded by how long replies are next to
the history. Times are per-turn medians over a few episodes per path.
Usage: ALFWORLD_DATA=... python bench/receiver_cache.py [--turns 20|40] [--reply-tokens 48]
       [--lookup-tokens 0] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from interlat_bench.benchmarks.alfworld_env import game_id, game_paths
from interlat_bench.benchmarks.alfworld_expert import REACT_INSTRUCTION, expert_conversation
from interlat_bench.benchmarks.base import Sample
from interlat_bench.harness.core import models
from interlat_bench.harness.core.generation import Decoding
from interlat_bench.methods.agents import ReceiverAgent
from interlat_bench.methods.base import Message

# An unseen game the expert needs 25 steps for: enough real observations for 20 turns.
GAME = "pick_two_obj_and_place-KeyChain-None-Safe-219/trial_T20190909_012027_782483"
NOTHING = "Observation: Nothing happens."
PLAN = "1. Find the first keychain and take it. 2. Put it in the safe. 3. Find the second one and do the same."


def episode(split: str, game: str, turns: int) -> tuple[str, list[str]]:
    """The task prompt and the first `turns - 1` observations of the expert's episode."""
    path = next((p for p in game_paths(split) if game_id(p) == game), None)
    if path is None:
        raise SystemExit(f"--game: no game {game!r} in split {split!r}")
    conv = expert_conversation(path, max_steps=turns + 5)["conversation"]
    observations = [m["content"] for m in conv[1:] if m["role"] == "user"]
    # Past the expert's last step, the engine's answer to an action that does not apply: what a
    # receiver that keeps failing reads (episodes of 40 turns are those).
    observations += [NOTHING] * (turns - 1 - len(observations))
    return conv[0]["content"], observations[:turns - 1]


def play(agent: ReceiverAgent, prompt: str, observations: list[str]):
    agent.begin(prompt, Message(kind="text", text=PLAN), Sample("bench", prompt))
    turn_ms, first_ms, replies = [], [], []
    for obs in [None, *observations]:
        t0 = time.perf_counter()
        replies.append(agent.respond(obs))
        turn_ms.append((time.perf_counter() - t0) * 1000)
        first_ms.append(agent.last_first_token_ms)
    return turn_ms, first_ms, replies, agent.history.shape[0]


def play_median(make_agent, prompt: str, observations: list[str], repeats: int):
    """Per-turn median times over `repeats` episodes (one turn is too short to time once)."""
    runs = [play(make_agent(), prompt, observations) for _ in range(repeats)]
    turn_ms = [statistics.median(r[0][i] for r in runs) for i in range(len(runs[0][0]))]
    first_ms = [statistics.median(r[1][i] for r in runs) for i in range(len(runs[0][1]))]
    return turn_ms, first_ms, runs[0][2], runs[0][3]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--turns", type=int, default=20)
    ap.add_argument("--reply-tokens", type=int, default=48, help="reply cap (ALFWorld's default is 48)")
    ap.add_argument("--lookup-tokens", type=int, default=Decoding().lookup_tokens,
                    help="prompt lookup draft length, 0 = off (the harness default is on)")
    ap.add_argument("--repeats", type=int, default=3, help="episodes per path; per-turn medians")
    ap.add_argument("--split", default="unseen")
    ap.add_argument("--game", default=GAME)
    args = ap.parse_args()
    prompt, observations = episode(args.split, args.game, args.turns)
    assert prompt.startswith(REACT_INSTRUCTION)
    lm = models.load(args.model, dtype="float32")
    dec = Decoding(max_new_tokens=args.reply_tokens, lookup_tokens=args.lookup_tokens)
    play(ReceiverAgent(lm, dec), prompt, observations[:1])  # warm-up
    cached = play_median(lambda: ReceiverAgent(lm, dec), prompt, observations, args.repeats)
    full = play_median(lambda: ReceiverAgent(lm, dec, reencode=True), prompt, observations, args.repeats)
    same = sum(a == b for a, b in zip(cached[2], full[2]))
    reply_tokens = [len(lm.tokenizer(r)["input_ids"]) for r in cached[2]]
    print(f"receiver {args.model}, device {models.device()}, {torch.get_num_threads()} threads; "
          f"game {args.split}/{args.game}; prompt lookup {args.lookup_tokens or 'off'}; "
          f"per-turn medians of {args.repeats} episodes per path")
    print(f"history at turn {args.turns}: {full[3]} tokens; replies: mean "
          f"{sum(reply_tokens) / len(reply_tokens):.1f} tokens (cap {args.reply_tokens}); "
          f"identical replies: {same}/{args.turns}")
    print(f"{'turn':>5} | {'turn ms: cached':>15} {'re-encode':>10} {'speed-up':>9} | "
          f"{'first token ms: cached':>22} {'re-encode':>10} {'speed-up':>9}")
    padded = sum(o == NOTHING for o in observations)
    if padded:
        print(f"({padded} observations after the expert's episode ended are {NOTHING!r})")
    for turn in (1, 10, 20, 30, 40):
        if turn <= args.turns:
            i = turn - 1
            print(f"{turn:>5} | {cached[0][i]:>15.0f} {full[0][i]:>10.0f} {full[0][i] / cached[0][i]:>8.1f}x | "
                  f"{cached[1][i]:>22.0f} {full[1][i]:>10.0f} {full[1][i] / cached[1][i]:>8.1f}x")
    print(f"{'all':>5} | {sum(cached[0]):>15.0f} {sum(full[0]):>10.0f} {sum(full[0]) / sum(cached[0]):>8.1f}x | "
          f"{sum(cached[1]):>22.0f} {sum(full[1]):>10.0f} {sum(full[1]) / sum(cached[1]):>8.1f}x")


if __name__ == "__main__":
    main()
