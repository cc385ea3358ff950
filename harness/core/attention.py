"""SDPA attention that keeps grouped-query models fast when decoding a few tokens.

With grouped-query attention (SmolLM2: 9 query heads share 3 key/value heads) transformers'
SDPA path either copies keys and values once per query head (``repeat_kv``, whenever a
mask is needed, as when a step feeds several tokens after a cache) or asks SDPA for
``enable_gqa``, which PyTorch's CPU kernel serves about 2x slower than the equivalent
below. For a short query we instead fold each group's query heads into the query length:
(B, kv_heads * G, Lq, D) -> (B, kv_heads, G * Lq, D), repeat the mask rows G times and
run plain SDPA against the cache as it is. The result is the same attention; long
queries (prefill, training) go to transformers' SDPA unchanged.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "sdpa_packed_gqa"
PACK_MAX_QUERY = 16  # decode steps and prompt-lookup drafts; longer queries use stock SDPA


def sdpa_packed_gqa(module, query, key, value, attention_mask, dropout: float = 0.0,
                    scaling: float | None = None, is_causal: bool | None = None, **kwargs):
    groups = getattr(module, "num_key_value_groups", 1)
    batch, heads, q_len, dim = query.shape
    # Without a mask, a query longer than one token relies on is_causal: leave it to SDPA.
    packable = groups > 1 and q_len <= PACK_MAX_QUERY and (
        q_len == 1 if attention_mask is None else attention_mask.shape[1] == 1)
    if not packable or dropout or kwargs.get("position_bias") is not None or kwargs.get("softcap"):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    q = query.reshape(batch, heads // groups, groups * q_len, dim)
    # Query row g * Lq + i is row i of head group g: every group reads the same mask rows.
    mask = attention_mask.repeat(1, 1, groups, 1) if attention_mask is not None else None
    out = torch.nn.functional.scaled_dot_product_attention(q, key, value, attn_mask=mask, scale=scaling)
    return out.reshape(batch, heads, q_len, dim).transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, sdpa_packed_gqa)
AttentionMaskInterface.register(NAME, sdpa_mask)


def use_packed_gqa(model) -> None:
    """Switch a model that runs on SDPA to the packed variant (others are left alone)."""
    if getattr(model.config, "_attn_implementation", None) == "sdpa":
        model.set_attn_implementation(NAME)
