"""Receivers train with fp32 master weights: a bf16 run moves the weights as an fp32 run does.

AdamW applied to bf16 weights loses steps of ~1e-5 to rounding (the spacing near 0.02 is
~1.2e-4), so most elements would never change; autocast over fp32 weights keeps them.
"""

from __future__ import annotations

import pytest
import torch

from interlat_bench.benchmarks.math import MathBenchmark
from interlat_bench.harness.core import models
from interlat_bench.trainers.config import preset
from interlat_bench.trainers.receiver import train_receiver


def _moved(folder, before: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    after = models.load(str(folder / "receiver"), dtype="float32").model.state_dict()
    return {k: (after[k].float() - v) for k, v in before.items() if k in after and after[k].shape == v.shape}


def test_bf16_training_moves_weights_like_fp32(tmp_path, results_env):
    samples = MathBenchmark().train_samples(limit=8)
    cfg = preset("quick", n_train=8, max_len=64, batch_size=2, lr=1e-5)
    before = {k: v.detach().float().clone()
              for k, v in models.load("tiny-llama", dtype="float32", seed=cfg.seed).model.state_dict().items()}
    moved = {}
    for dtype in ("float32", "bfloat16"):
        folder = train_receiver("tiny-llama", "none", samples, {}, cfg, dtype=dtype, out_root=tmp_path / dtype)
        moved[dtype] = _moved(folder, before)
    # Embeddings are resized for <bop>/<eop> (shape changes) and tied heads share them: compare
    # every other weight matrix, element by element.
    names = [k for k in moved["float32"] if k.endswith("weight") and moved["float32"][k].dim() == 2]
    assert names
    for name in names:
        fp32, bf16 = moved["float32"][name], moved["bfloat16"][name]
        assert (fp32 != 0).float().mean() > 0.99, name  # fp32 training changes (almost) every element
        assert (bf16 != 0).float().mean() > 0.99, f"{name}: bf16 run left weights unchanged"
        # Same direction and size of update; autocast changes gradients only slightly.
        cos = torch.nn.functional.cosine_similarity(fp32.flatten(), bf16.flatten(), dim=0)
        assert cos > 0.9, (name, float(cos))
        assert float(bf16.norm() / fp32.norm()) == pytest.approx(1.0, abs=0.2), name
