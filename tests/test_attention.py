"""The packed grouped-query attention must give the stock SDPA results."""

import torch

from interlat_bench.harness.core import attention, models
from interlat_bench.harness.core.generation import cache_arg
from interlat_bench.harness.core.kv_cache import appendable


def _device_type(model) -> str:
    return next(model.parameters()).device.type


def _steps(model, ids, mask):
    """Logits of a 6-token prefill, then a 4-token step and a 1-token step on its cache."""
    cache = appendable(None, model.config)
    out = []
    for a, b in ((0, 6), (6, 10), (10, 11)):
        dev = next(model.parameters()).device
        logits = model(input_ids=ids[:, a:b].to(dev), attention_mask=mask[:, :b].to(dev), **cache_arg(model, cache),
                       use_cache=True).logits
        out.append(logits[mask[:, a:b].bool().to(dev)])  # padded positions carry no meaning
    return out


def test_packed_gqa_equals_stock_sdpa_for_short_queries_with_and_without_padding():
    lm = models.load("tiny-llama", dtype="float32")
    model = lm.model
    assert model.config._attn_implementation == attention.NAME
    assert model.model.layers[0].self_attn.num_key_value_groups == 2  # grouped: the packed path runs
    ids = torch.randint(5, 1000, (2, 11), generator=torch.Generator().manual_seed(0))
    for mask in (torch.ones(2, 11, dtype=torch.long),
                 torch.tensor([[0, 0, 0] + [1] * 8, [1] * 11])):  # row 0 left padded
        with torch.no_grad():
            packed = _steps(model, ids, mask)
            model.set_attn_implementation("sdpa")
            stock = _steps(model, ids, mask)
            model.set_attn_implementation(attention.NAME)
        # GPU kernels sum in another order (and pick other SDPA backends) than the CPU's.
        atol = 1e-4 if _device_type(model) == "cuda" else 1e-5
        for p, s in zip(packed, stock):
            assert torch.allclose(p, s, atol=atol), (p - s).abs().max()


def test_packed_gqa_equals_repeated_heads_with_a_mask():
    q = torch.randn(1, 4, 3, 8)
    kv = torch.randn(1, 2, 9, 8)

    class Module:
        num_key_value_groups = 2
        is_causal = True

    mask = torch.ones(1, 1, 3, 9, dtype=torch.bool).tril(diagonal=6)
    out, _ = attention.sdpa_packed_gqa(Module(), q, kv, kv, mask, scaling=0.5)
    ref = torch.nn.functional.scaled_dot_product_attention(
        q, kv.repeat_interleave(2, 1), kv.repeat_interleave(2, 1), attn_mask=mask, scale=0.5).transpose(1, 2)
    assert out.shape == (1, 3, 4, 8) and torch.allclose(out, ref, atol=1e-6)
