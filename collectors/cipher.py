"""CIPHER's sender (Pham et al. 2024; as Zephyroam/KVComm's ``models_cipher.py`` runs it): the plan
written as expected embeddings instead of sampled tokens.

At each step the next-token distribution p = softmax(logits / T) gives the row e = p^T W_in
(the input embeddings, on the scale the model reads them), which is fed back as the next
input. The plan ends where e's nearest token (cosine) is an end-of-turn token, or after
``max_new_tokens`` rows (greedy length). As T -> 0, p is one-hot and the rows are the
embeddings of the greedy plan's tokens: the text path.
"""

from __future__ import annotations

import torch

from interlat_bench.collectors import kv
from interlat_bench.harness.core.generation import backbone_and_head, eos_ids
from interlat_bench.harness.core.message import Message, MessageKind
from interlat_bench.harness.core.timing import clock_ms


def expected_embedding(logits: torch.Tensor, table: torch.Tensor, temperature: float) -> torch.Tensor:
    """p^T W for p = softmax(logits / T); T = 0: the argmax token's row (a one-hot p)."""
    if temperature == 0:
        return table[logits.argmax(-1)]
    p = torch.softmax(logits.float() / temperature, dim=-1)
    return (p @ table.float()).to(table.dtype)


@torch.no_grad()
def write(model, prompt: list[int], *, max_new_tokens: int, temperature: float, stop: set[int]) -> torch.Tensor:
    """The plan as expected-embedding rows (n x H, n <= max_new_tokens)."""
    _, head = backbone_and_head(model)
    table = model.get_input_embeddings().weight * kv.embed_scale(model)
    unit = torch.nn.functional.normalize(table.float(), dim=-1)
    cache = kv.new_cache(model)
    h = kv.forward(model, cache, ids=prompt)[-1]
    rows = []
    for _ in range(max_new_tokens):
        e = expected_embedding(head(h), table, temperature)
        if int((unit @ torch.nn.functional.normalize(e.float(), dim=-1)).argmax()) in stop:
            break
        rows.append(e)
        h = kv.forward(model, cache, embeds=e[None])[-1]
    return torch.stack(rows) if rows else table.new_zeros(0, table.shape[1])


def send(lm, tasks: list[tuple[str, str]], *, prompt_template: str, max_new_tokens: int, temperature: float,
         log=None) -> dict[str, Message]:
    """Task id -> the EMBEDDINGS message of ``lm``'s plan; ``sender_ms``: its wall time."""
    from interlat_bench.collectors.messages import prompt_ids

    stop = eos_ids(lm.tokenizer)
    out = {}
    for n, (tid, task) in enumerate(tasks, 1):
        t0 = clock_ms()
        rows = write(lm.model, prompt_ids(lm.tokenizer, prompt_template, task), max_new_tokens=max_new_tokens,
                     temperature=temperature, stop=stop)
        out[tid] = Message(kind=MessageKind.EMBEDDINGS, latents=rows, sender_ms=clock_ms() - t0)
        if log:
            log(n, len(tasks))
    return out
