"""What the training-free families share on the sender's side: its prompt, one prefill on top of
a KV cache, the cache packed as a message, and the layers of a model.

One task at a time (no padding), so a shipped cache holds the task's own positions only.
"""

from __future__ import annotations

import torch

from interlat_bench.harness.core.generation import backbone_and_head, cache_arg


def decoder_layers(model) -> torch.nn.ModuleList:
    """The decoder blocks, in order (what ``layers`` and the activation's k and j index)."""
    return backbone_and_head(model)[0].layers


def embed_scale(model) -> float:
    """What the embedding module multiplies its rows by (Gemma: sqrt(hidden)); 1 elsewhere.
    A vector fed as ``inputs_embeds`` skips that module, so it must be on the scaled scale."""
    scale = getattr(model.get_input_embeddings(), "embed_scale", 1.0)
    return float(scale.item() if torch.is_tensor(scale) else scale)


def forward(model, cache, *, ids: list[int] | None = None, embeds: torch.Tensor | None = None) -> torch.Tensor:
    """One unpadded pass (token ``ids`` or ``embeds``, T x H) on top of ``cache`` (extended in
    place); the last-layer states after the final norm (T x H)."""
    decoder, _ = backbone_and_head(model)
    dev = model.get_input_embeddings().weight.device
    x = model.get_input_embeddings()(torch.tensor([ids], device=dev)) if embeds is None else embeds[None].to(dev)
    past = cache.get_seq_length()
    positions = torch.arange(past, past + x.shape[1], device=dev)[None]
    mask = torch.ones(1, past + x.shape[1], dtype=torch.long, device=dev)
    out = decoder(inputs_embeds=x, attention_mask=mask, position_ids=positions, **cache_arg(decoder, cache),
                  use_cache=True)
    return out.last_hidden_state[0]


def new_cache(model):
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def pack(cache, whole: set[int] | None = None, keep_first: int = 0, last: int | None = None):
    """A cache as a message's ``kv``: one (keys, values) pair per layer, batch dimension dropped.
    Layers in ``whole`` (None: all) keep every position, or only the ``last`` ones if given; the
    others keep their first ``keep_first`` positions."""
    out = []
    for i, layer in enumerate(cache.layers):
        k, v = layer.keys[0], layer.values[0]
        if whole is None or i in whole:
            if last is not None:
                k, v = k[:, k.shape[1] - last:], v[:, v.shape[1] - last:]
        else:
            k, v = k[:, :keep_first], v[:, :keep_first]
        out.append((k.detach().clone(), v.detach().clone()))
    return tuple(out)
