"""What the receiver reads between <bop> and <eop>: built here, and only here.

Training (``SlotReceiver.slot`` in trainers/receiver.py) and evaluation
(``TrainedReceiver.slot_rows`` in methods/interlat.py) both call ``slot_rows``, so a trained
receiver sees at evaluation exactly the slot form it was trained on: the same truncation to
``max_rows`` (the checkpoint's ``max_slot_rows``), the same adapter, the same embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from interlat_bench.harness.core.message import MessageKind
from interlat_bench.trainers.curriculum import mix_slot

__all__ = ["slot_rows"]


def slot_rows(kind: MessageKind | str, *, latents: torch.Tensor | None, plan_ids: Sequence[int], adapter: nn.Module | None,
              embed: nn.Embedding, max_rows: int | None, ratio: float = 1.0) -> torch.Tensor | None:
    """The slot rows (n, H_receiver) for a message, or None for an empty slot.

    kind: what the slot holds ("none", "text", "latent"). ``plan_ids`` are the plan's tokens in
    the receiver's tokenizer (``conv.tokenize``); ``latents`` the sender's (L, H_s) message.
    Both are truncated to their first ``max_rows`` (None: no limit) before anything else.
    - "none", or "latent" with zero rows: None (the slot stays ``<bop><eop>``);
    - "text", or "latent" without latents (the plan pass of L_plan): plan token embeddings;
    - "latent": adapter(latents), mixed with the plan-embedding tail by the curriculum
      ``ratio`` when it is below 1 (``curriculum.mix_slot``); 1.0 (evaluation) is pure latents.
    Rows come out in the embedding's dtype, on its device. Gradients flow as the caller allows
    (evaluation wraps it in ``torch.no_grad``).
    """
    kind = MessageKind(kind)  # a ValueError names a kind that does not exist
    if kind is MessageKind.NONE or (kind is MessageKind.LATENT and latents is not None and len(latents) == 0):
        return None  # nothing to read (a latent message cut to no rows: truncate rho=0)
    if max_rows is not None and max_rows < 0:
        raise ValueError(f"max_rows must be >= 0 (or None), got {max_rows}")
    dev = embed.weight.device
    ids = list(plan_ids)[:max_rows]

    def plan() -> torch.Tensor:
        return embed(torch.tensor(ids, dtype=torch.long, device=dev))

    if kind is MessageKind.TEXT or latents is None:
        return plan()
    if adapter is None:
        raise ValueError("a latent slot needs the communication adapter")
    lat = latents[:max_rows].to(dev, dtype=next(adapter.parameters()).dtype)
    rows = adapter(lat)
    if ratio < 1.0:
        rows = mix_slot(rows, plan(), ratio)
    return rows.to(embed.weight.dtype)
