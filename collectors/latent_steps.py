"""K latent steps: a sender that speaks in K hidden states instead of plan tokens (SPEC section 5).

The sender reads its prompt, then, without sampling any token, runs K steps: the first input
is the embedding ``lat_bos``; each step's last-layer state z_k (after the final norm, at the
last position) is a row of the message and, mapped by ``h2e(z) = Linear(LN(z))``, the next
input embedding. Z = [z_1 .. z_K] is a K x H message the `latent` receiver's adapter reads.

``LatentStepHead.initial`` is the state before any compression training: ``untrained_k``
sends with it as it is, and compression training starts from it.
"""

from __future__ import annotations

import torch
from torch import nn

from interlat_bench.harness.core.generation import backbone_and_head, cache_arg, left_pad
from interlat_bench.harness.core.message import Message, MessageKind
from interlat_bench.harness.core.prompts import LATENT_STEP_PROMPT
from interlat_bench.harness.core.timing import clock_ms


class LatentStepHead(nn.Module):
    """``lat_bos`` and ``h2e``: what turns a last-layer state into the next input embedding."""

    def __init__(self, hidden: int):
        super().__init__()
        self.lat_bos = nn.Parameter(torch.zeros(hidden))
        self.norm = nn.LayerNorm(hidden)
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(z))

    @classmethod
    def initial(cls, embed: nn.Embedding) -> LatentStepHead:
        """No learned parts yet, so nothing random: ``lat_bos`` is the mean token embedding, and
        h2e rescales the normalised state to the embeddings' mean row norm around their mean
        (last-layer states are about 17x larger than embeddings on SmolLM2; fed back unscaled
        they would be far outside anything the model has read)."""
        # Built on the CPU, then moved: the embeddings may be on a GPU.
        w = embed.weight.detach().float().cpu()
        head = cls(w.shape[1])
        with torch.no_grad():
            head.lat_bos.copy_(w.mean(0))
            scale = w.norm(dim=1).mean() / w.shape[1] ** 0.5
            head.proj.weight.copy_(torch.eye(w.shape[1]) * scale)
            head.proj.bias.copy_(w.mean(0))
        return head.to(embed.weight.device)


def latent_steps(model, head: LatentStepHead, prompts: list[list[int]], k: int, pad_id: int) -> torch.Tensor:
    """(B, K, H) last-layer states of K latent steps after each prompt (token ids, batched with
    left padding). Differentiable: callers that only send wrap it in ``torch.no_grad``."""
    from transformers import DynamicCache

    decoder, _ = backbone_and_head(model)
    embed = model.get_input_embeddings()
    dev, dtype = embed.weight.device, embed.weight.dtype
    ids, mask = left_pad(prompts, pad_id, dev)
    cache = DynamicCache(config=model.config)

    def step(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -x.shape[1]:]
        return decoder(inputs_embeds=x, attention_mask=mask, position_ids=positions, **cache_arg(decoder, cache),
                       use_cache=True).last_hidden_state[:, -1]

    step(embed(ids), mask)  # the prompt fills the cache; its own states are not sent
    x = head.lat_bos.to(dtype).expand(len(prompts), 1, -1)
    rows = []
    for _ in range(k):
        mask = torch.cat([mask, mask.new_ones(len(prompts), 1)], dim=-1)
        z = step(x, mask)
        rows.append(z)
        x = head(z.to(head.proj.weight.dtype)).to(dtype).unsqueeze(1)
    return torch.stack(rows, dim=1)


BATCH = 16  # tasks per latent-step batch


def send_latent_steps(model, tokenizer, tasks: list[tuple[str, str]], k: int, *,
                      head: LatentStepHead | None = None, log=None) -> dict[str, Message]:
    """Task id -> a K x H latent message (float16, as shipped) of ``model`` reading
    LATENT_STEP_PROMPT; ``head`` None: the initial (untrained) head. Each message's
    ``sender_ms`` is its share of its batch's wall time, as waited for."""
    from interlat_bench.collectors.messages import prompt_ids

    head = head or LatentStepHead.initial(model.get_input_embeddings())
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out: dict[str, Message] = {}
    for i in range(0, len(tasks), BATCH):
        batch = tasks[i:i + BATCH]
        prompts = [prompt_ids(tokenizer, LATENT_STEP_PROMPT, task) for _, task in batch]
        t0 = clock_ms()
        with torch.no_grad():
            z = latent_steps(model, head, prompts, k, pad)
        share = (clock_ms() - t0) / len(batch)
        for (tid, _), rows in zip(batch, z.to("cpu", torch.float16)):
            out[tid] = Message(kind=MessageKind.LATENT, latents=rows, sender_ms=share)
        if log:
            log(min(i + BATCH, len(tasks)), len(tasks))
    return out
