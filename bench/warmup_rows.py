"""Does what the adapter warm-up learns carry over to plans it never saw, and how many plans
does it need?

Run: ``python bench/warmup_rows.py TRAIN_MESSAGES [MORE_TRAIN_MESSAGES] TEST_MESSAGES
[--plans 256,640,2048] [--facts 4 --options 8] [--steps N] [--ce-weight W] [--positions rope] [--receiver smollm2-135m]``,
with TRAIN_MESSAGES collections of the sender's plans for the probe's training tasks
(``$INTERLAT_CACHE/messages/KEY``: the receiver's 256 and the warm-up's further plans; as many
as the largest ``--plans``) and TEST_MESSAGES one for its test tasks, all at the rung given.
``--steps``, ``--ce-weight`` and ``--positions`` replace the preset's warm-up steps, cross-entropy weight
and the adapter's positions.

For each count N, a fresh adapter gets the probe preset's warm-up (``warm_up_adapter``: its
steps, rates and loss) on the first N training plans and nothing else; printed: the share of
rows whose nearest receiver token embedding (cosine) is the token the row stands for, on the
training plans it read and on the held-out ones, over all rows and over the fact rows (colour
words and object names, what the probe asks about), and for the fact rows of held-out plans
how far they sit from their token's embedding: mean cosine and norm ratio (row norm over the
embedding's norm: what the receiver reads is the row, not its nearest token). First, the sender's own LM head on the
held-out rows (same tokenizer only): whether the rows hold their tokens at all. Not a test:
the numbers depend on the plans and the machine's float reductions.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
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
    ap.add_argument("messages", type=Path, nargs="+", help="training collections, then the test one")
    ap.add_argument("--plans", default="256,640,2048")
    ap.add_argument("--facts", type=int, default=4)
    ap.add_argument("--options", type=int, default=8)
    ap.add_argument("--receiver", default="smollm2-135m")
    ap.add_argument("--sender", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--ce-weight", type=float, default=None)
    ap.add_argument("--positions", default=None, help="the adapter's positions (none, rope)")
    args = ap.parse_args()
    if len(args.messages) < 2:
        ap.error("give at least one training collection and the test collection")

    cfg = Latent({}).train_config(ProbeBenchmark({"n_facts": args.facts, "n_options": args.options}))
    cfg = replace(cfg, **{k: v for k, v in (("adapter_warmup_steps", args.steps),
                                            ("warmup_ce_weight", args.ce_weight),
                                            ("adapter_positions", args.positions)) if v is not None})
    lm = models.load(args.receiver, dtype="float32", seed=cfg.seed)
    embed = lm.model.get_input_embeddings()
    unit = torch.nn.functional.normalize(embed.weight.detach().float(), dim=-1)
    tok = lm.tokenizer
    sender_tok = None if args.sender == args.receiver else models.tokenizer(args.sender)
    facts = {i for i in range(len(tok)) if tok.decode([i]).strip().lower() in {*COLOURS, *OBJECTS}}
    train = {task: m for folder in args.messages[:-1] for task, m in load_messages(folder).items()}
    test = load_messages(args.messages[-1])
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

    def closeness(adapter) -> str:
        cosine, ratio = [], []
        with torch.no_grad():
            for latents, tokens in held_out:
                ids = torch.tensor(tokens[: len(latents)])
                fact = torch.tensor([int(t) in facts for t in ids])
                rows, target = adapter(latents)[fact], embed.weight.detach().float()[ids[fact]]
                cosine += torch.cosine_similarity(rows, target, dim=-1).tolist()
                ratio += (rows.norm(dim=-1) / target.norm(dim=-1)).tolist()
        return f"cosine {sum(cosine) / len(cosine):.3f}, norm ratio {sum(ratio) / len(ratio):.2f}"

    if sender_tok is None:
        head = lm.model.get_output_embeddings().weight.detach().float()
        print(f"sender's LM head on held-out rows: {rates(lambda h: (h @ head.T).argmax(-1), held_out)}")
    print(f"warm-up: {cfg.adapter_warmup_steps} steps of {cfg.batch_size} plans at {cfg.warmup_lr}, "
          f"cross-entropy weight {cfg.warmup_ce_weight}, positions {cfg.adapter_positions}; "
          f"{len(test)} held-out plans", flush=True)
    ordered = sorted(train.items())  # by task id: the first N training tasks, as warmup_plans takes them
    for count in [int(x) for x in args.plans.split(",")]:
        if count > len(ordered):
            raise SystemExit(f"{len(ordered)} training plans, fewer than --plans {count}")
        pairs = further_plan_rows(tok, dict(ordered[:count]), [], cfg, sender_tok)
        torch.manual_seed(cfg.seed)
        adapter = CommAdapter(int(ordered[0][1].latents.shape[1]), lm.hidden_size, positions=cfg.adapter_positions)
        start = time.perf_counter()
        warm_up_adapter(adapter, embed, [], cfg, log=lambda *_: None, further=pairs)
        seconds = time.perf_counter() - start

        def nearest(latents, adapter=adapter):
            return (torch.nn.functional.normalize(adapter(latents), dim=-1) @ unit.T).argmax(-1)

        print(f"{count:>5} plans ({seconds:.0f} s): read {rates(nearest, pairs)}; held-out {rates(nearest, held_out)}; "
              f"held-out fact rows {closeness(adapter)}", flush=True)


if __name__ == "__main__":
    main()
