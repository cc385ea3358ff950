"""Do receiver weights really move when training in bf16? A check, not a speed benchmark.

Run: ``MATH_DATA=../shared/data/math python bench/bf16_updates.py [--steps 4] [--receiver tiny-llama]``.

Trains the same receiver on the same 8 MATH conversations with the project's trainer, once
with fp32 compute and once with bf16 compute (fp32 master weights, autocast), and, for
reference, with the naive recipe the trainer must not use: weights stored in bf16 and
updated in place by AdamW. For each it prints the share of weight elements (2-D matrices,
embeddings excluded because resizing for <bop>/<eop> changes their shape) that never
changed, and the cosine between its weight updates and the fp32 run's.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from interlat_bench.benchmarks.math import MathBenchmark
from interlat_bench.harness.core import conversation as conv
from interlat_bench.harness.core import models
from interlat_bench.trainers.config import preset
from interlat_bench.trainers.receiver import SlotReceiver, build_examples, train_receiver


def matrices(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()
            if v.dim() == 2 and "embed" not in k and "lm_head" not in k}


def naive_bf16(receiver: str, samples, cfg) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """bf16 weights, AdamW in place: what the trainer did before it kept fp32 master weights.
    Returns the weights before (as rounded to bf16) and after."""
    lm = models.load(receiver, dtype="bfloat16", seed=cfg.seed)
    start = matrices(lm.model)
    bop, eop = conv.add_slot_tokens(lm)
    examples = build_examples(lm.tokenizer, samples, {}, "none", cfg)
    module = SlotReceiver(lm.model, None, "none", bop, eop, cfg.weights(), seed=cfg.seed).train()
    opt = torch.optim.AdamW([p for p in lm.model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)
    for i in range(0, len(examples), cfg.batch_size):
        opt.zero_grad()
        module(examples[i:i + cfg.batch_size]).backward()
        opt.step()
    return start, matrices(lm.model)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--receiver", default="tiny-llama")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-5)
    args = ap.parse_args()
    cfg = preset("quick", n_train=2 * args.steps, batch_size=2, max_len=128, lr=args.lr)
    samples = MathBenchmark().train_samples(limit=cfg.n_train)
    before = matrices(models.load(args.receiver, dtype="float32", seed=cfg.seed).model)
    after = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in ("float32", "bfloat16"):
            folder = train_receiver(args.receiver, "none", samples, {}, cfg, dtype=dtype,
                                    out_root=Path(tmp) / dtype, log=lambda *_: None)
            after[f"trainer, {dtype} compute"] = matrices(models.load(str(folder / "receiver"),
                                                                      dtype="float32").model)
    starts = {name: before for name in after}
    name = "naive: bf16 weights + AdamW"
    starts[name], after[name] = naive_bf16(args.receiver, samples, cfg)
    reference = {k: after["trainer, float32 compute"][k] - before[k] for k in before}
    print(f"device {models.device()}, receiver {args.receiver}, {args.steps} optimizer steps, lr {args.lr}, "
          f"{sum(v.numel() for v in before.values()):,} weight elements in {len(before)} matrices")
    print(f"{'run':<30} {'unchanged elements':>19} {'cosine to fp32 update':>22}")
    for name, weights in after.items():
        delta = {k: weights[k] - starts[name][k] for k in before}
        unchanged = sum(int((d == 0).sum()) for d in delta.values()) / sum(d.numel() for d in delta.values())
        flat, ref = torch.cat([d.flatten() for d in delta.values()]), torch.cat([r.flatten() for r in reference.values()])
        cos = float(torch.nn.functional.cosine_similarity(flat, ref, dim=0))
        print(f"{name:<30} {unchanged:>18.1%} {cos:>22.3f}")


if __name__ == "__main__":
    main()
