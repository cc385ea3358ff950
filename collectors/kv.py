"""What the training-free families share on the sender's side: several tasks' prompts read in one
left-padded batch (``Batch``), steps on top of its cache, each task's cache packed as a message
without the padding, and the layers of a model.

Positions follow each row's mask, so a row's cache, its padding cut off, holds what the task's
prompt read alone would hold (up to the float rounding of a padded batch).
"""

from __future__ import annotations

import torch

from interlat_bench.harness.core.generation import backbone_and_head, cache_arg, left_pad

BATCH = 16  # tasks per sender batch


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


class Batch:
    """Prompts (token ids) read together, left-padded; ``last``: each row's last-layer state at its
    last position (B x H), after the prompt and after each ``step``."""

    def __init__(self, model, prompts: list[list[int]], pad_id: int):
        self.model = model
        self.decoder, _ = backbone_and_head(model)
        embed = model.get_input_embeddings()
        ids, self.mask = left_pad(prompts, pad_id, embed.weight.device)
        self.pad = [ids.shape[1] - len(p) for p in prompts]
        self.cache = new_cache(model)
        self.last = self._forward(embed(ids))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        positions = (self.mask.cumsum(-1) - 1).clamp(min=0)[:, -x.shape[1]:]
        out = self.decoder(inputs_embeds=x, attention_mask=self.mask, position_ids=positions,
                           **cache_arg(self.decoder, self.cache), use_cache=True)
        return out.last_hidden_state[:, -1]

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """Feed one input embedding per row (B x H); the new ``last``."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.pad), 1)], dim=-1)
        self.last = self._forward(x[:, None].to(self.last.dtype))
        return self.last

    def pack(self, row: int, whole: set[int] | None = None, keep_first: int = 0, last: int | None = None):
        """Row ``row``'s cache as a message's ``kv``, its padding cut off: one (keys, values) pair per
        layer, batch dimension dropped. Layers in ``whole`` (None: all) keep every position, or only
        the ``last`` ones if given; the others keep their first ``keep_first`` positions."""
        out = []
        for i, layer in enumerate(self.cache.layers):
            k, v = layer.keys[row, :, self.pad[row]:], layer.values[row, :, self.pad[row]:]
            if whole is None or i in whole:
                if last is not None:
                    k, v = k[:, k.shape[1] - last:], v[:, v.shape[1] - last:]
            else:
                k, v = k[:, :keep_first], v[:, :keep_first]
            out.append((k.detach().clone(), v.detach().clone()))
        return tuple(out)


def batches(lm, tasks: list[tuple[str, str]], prompt_template: str):
    """(task ids, their prompts' token ids, the pad id) per BATCH tasks."""
    from interlat_bench.collectors.messages import prompt_ids

    tok = lm.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    for at in range(0, len(tasks), BATCH):
        chunk = tasks[at:at + BATCH]
        yield [tid for tid, _ in chunk], [prompt_ids(tok, prompt_template, task) for _, task in chunk], pad
