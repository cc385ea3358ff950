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
from interlat_bench.harness.core.generation import backbone_and_head
from interlat_bench.harness.core.message import Message, MessageKind
from interlat_bench.harness.core.timing import clock_ms


def expected_embedding(logits: torch.Tensor, table: torch.Tensor, temperature: float) -> torch.Tensor:
    """p^T W for p = softmax(logits / T); T = 0: the argmax token's row (a one-hot p)."""
    if temperature == 0:
        return table[logits.argmax(-1)]
    p = torch.softmax(logits.float() / temperature, dim=-1)
    return (p @ table.float()).to(table.dtype)


@torch.no_grad()
def write_batch(model, prompts: list[list[int]], pad_id: int, *, max_new_tokens: int, temperature: float,
                stop: set[int]) -> list[torch.Tensor]:
    """Each prompt's plan as expected-embedding rows (n_i x H, n_i <= max_new_tokens), read together."""
    _, head = backbone_and_head(model)
    table = model.get_input_embeddings().weight * kv.embed_scale(model)
    unit = torch.nn.functional.normalize(table.float(), dim=-1)
    batch = kv.Batch(model, prompts, pad_id)
    rows: list[list[torch.Tensor]] = [[] for _ in prompts]
    writing = [True] * len(prompts)
    for _ in range(max_new_tokens):
        e = expected_embedding(head(batch.last), table, temperature)
        nearest = (torch.nn.functional.normalize(e.float(), dim=-1) @ unit.T).argmax(-1).tolist()
        for i, token in enumerate(nearest):
            writing[i] = writing[i] and token not in stop
            if writing[i]:
                rows[i].append(e[i])
        if not any(writing):
            break
        batch.step(e)  # a row that has stopped keeps stepping; its rows are not kept
    return [torch.stack(r) if r else table.new_zeros(0, table.shape[1]) for r in rows]


def write(model, prompt: list[int], *, max_new_tokens: int, temperature: float, stop: set[int]) -> torch.Tensor:
    """One prompt's plan (``write_batch`` of one)."""
    return write_batch(model, [prompt], 0, max_new_tokens=max_new_tokens, temperature=temperature, stop=stop)[0]


def send(lm, tasks: list[tuple[str, str]], *, prompt_template: str, max_new_tokens: int, temperature: float,
         log=None) -> dict[str, Message]:
    """Task id -> the EMBEDDINGS message of ``lm``'s plan (``kv.BATCH`` tasks at a time;
    ``sender_ms``: the task's share of its batch's wall time)."""
    stop = lm.stop_ids
    out = {}
    for ids, prompts, pad in kv.batches(lm, tasks, prompt_template):
        t0 = clock_ms()
        plans = write_batch(lm.model, prompts, pad, max_new_tokens=max_new_tokens, temperature=temperature, stop=stop)
        share = (clock_ms() - t0) / len(ids)
        for tid, rows in zip(ids, plans, strict=True):
            out[tid] = Message(kind=MessageKind.EMBEDDINGS, latents=rows, sender_ms=share)
        if log:
            log(len(out), len(tasks))
    return out
