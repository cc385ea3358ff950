"""Does what the adapter warm-up learns carry over to plans it never saw, and how many plans
does it need?

Run: ``python bench/warmup_rows.py TRAIN_MESSAGES TEST_MESSAGES [--plans 256,640,2048]
[--facts 4 --options 8] [--receiver smollm2-135m]``, with TRAIN_MESSAGES a collection of the
sender's plans for the probe's training tasks (``$INTERLAT_CACHE/messages/KEY``; as many as the
largest ``--plans``) and TEST_MESSAGES one for its test tasks, both at the rung given.

For each count N, a fresh adapter gets the probe preset's warm-up (``warm_up_adapter``: its
steps, rates and loss) on the first N training plans and nothing else; printed: the share of
rows whose nearest receiver token embedding (cosine) is the token the row stands for, on the
training plans it read and on the held-out ones, over all rows and over the fact rows (colour
words and object names, what the probe asks about). First, the sender's own LM head on the
held-out rows (same tokenizer only): whether the rows hold their tokens at all. Not a test:
the numbers depend on the plans and the machine's float reductions.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from interlat_bench.benchmarks.probe import COLOURS, OBJECTS, ProbeBenchmark
from interlat_bench.collectors.messages import load_messages
from interlat_bench.harness.core import models
from interlat_bench.methods.interlat import Latent
from interlat_bench.trainers.adapter import CommAdapter
from interlat_bench.trainers.receiver import further_plan_rows, warm_up_adapter


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("train", type=Path)
    ap.add_argument("test", type=Path)
    ap.add_argument("--plans", default="256,640,2048")
    ap.add_argument("--facts", type=int, default=4)
    ap.add_argument("--options", type=int, default=8)
    ap.add_argument("--receiver", default="smollm2-135m")
    ap.add_argument("--sender", default="smollm2-135m")
    args = ap.parse_args()

    cfg = Latent({}).train_config(ProbeBenchmark({"n_facts": args.facts, "n_options": args.options}))
    lm = models.load(args.receiver, dtype="float32", seed=cfg.seed)
    embed = lm.model.get_input_embeddings()
    unit = torch.nn.functional.normalize(embed.weight.detach().float(), dim=-1)
    tok = lm.tokenizer
    sender_tok = None if args.sender == args.receiver else models.tokenizer(args.sender)
    facts = {i for i in range(len(tok)) if tok.decode([i]).strip().lower() in {*COLOURS, *OBJECTS}}
    train, test = load_messages(args.train), load_messages(args.test)
    held_out = further_plan_rows(tok, test, [], cfg, sender_tok)

    def rates(rows_of, pairs) -> str:
        hit = n = fact_hit = fact_n = 0
        with torch.no_grad():
            for latents, tokens in pairs:
                ids = torch.tensor(tokens[: len(latents)])
                nearest = rows_of(latents)
                right = nearest == ids
                fact = torch.tensor([int(t) in facts for t in ids])
                hit, n = hit + int(right.sum()), n + len(ids)
                fact_hit, fact_n = fact_hit + int(right[fact].sum()), fact_n + int(fact.sum())
        return f"all rows {hit / n:6.1%} (n={n}), fact rows {fact_hit / max(fact_n, 1):6.1%} (n={fact_n})"

    if sender_tok is None:
        head = lm.model.get_output_embeddings().weight.detach().float()
        print(f"sender's LM head on held-out rows: {rates(lambda h: (h @ head.T).argmax(-1), held_out)}")
    print(f"warm-up: {cfg.adapter_warmup_steps} steps of {cfg.batch_size} plans at {cfg.warmup_lr}, "
          f"cross-entropy weight {cfg.warmup_ce_weight}; {len(test)} held-out plans", flush=True)
    ordered = sorted(train.items())  # by task id: the first N training tasks, as warmup_plans takes them
    for count in [int(x) for x in args.plans.split(",")]:
        if count > len(ordered):
            raise SystemExit(f"{args.train}: {len(ordered)} plans, fewer than --plans {count}")
        pairs = further_plan_rows(tok, dict(ordered[:count]), [], cfg, sender_tok)
        torch.manual_seed(cfg.seed)
        adapter = CommAdapter(int(ordered[0][1].latents.shape[1]), lm.hidden_size)
        start = time.perf_counter()
        warm_up_adapter(adapter, embed, [], cfg, log=lambda *_: None, further=pairs)
        seconds = time.perf_counter() - start

        def nearest(latents, adapter=adapter):
            return (torch.nn.functional.normalize(adapter(latents), dim=-1) @ unit.T).argmax(-1)

        print(f"{count:>5} plans ({seconds:.0f} s): read {rates(nearest, pairs)}; held-out {rates(nearest, held_out)}",
              flush=True)


if __name__ == "__main__":
    main()
