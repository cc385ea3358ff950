"""LatentMAS's sender (Gen-Verse/LatentMAS, ``models.py::generate_latent_batch``): m latent steps
after its prompt, and the whole KV cache (prompt + steps) as the message.

Each step takes the last layer's state at the last position (after the final norm), maps it
into the input-embedding space with W = (W_out^T W_out + lambda I)^-1 W_out^T W_in (lambda 1e-5;
``realign="identity"``: W = I, as the repository does without ``--latent_space_realign``),
rescales it to the mean norm of the input embeddings (as the model reads them: Gemma scales
its embeddings by sqrt(hidden) inside the embedding module, so that scale is applied too) and
feeds it back as the next input. With ``latent_only`` only the steps' positions are shipped
(LatentMAS #37); with 0 steps the prompt's KV is still shipped (LatentMAS drops it there, #13).
"""

from __future__ import annotations

import torch

from interlat_bench.collectors import kv
from interlat_bench.harness.core.message import Message, MessageKind
from interlat_bench.harness.core.timing import clock_ms

RIDGE = 1e-5  # lambda, as in LatentMAS


def realignment(model, mode: str = "matrix") -> tuple[torch.Tensor, torch.Tensor]:
    """(W, target norm): W maps a last-layer state to the input-embedding space (H x H, float32)."""
    w_in = model.get_input_embeddings().weight.detach().float()
    w_out = model.get_output_embeddings().weight.detach().float()
    target = w_in.norm(dim=1).mean() * kv.embed_scale(model)
    if mode == "identity":
        return torch.eye(w_in.shape[1], device=w_in.device), target
    gram = w_out.T @ w_out + RIDGE * torch.eye(w_out.shape[1], device=w_out.device)
    return torch.linalg.solve(gram, w_out.T @ w_in), target


def realign(h: torch.Tensor, w: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    aligned = h.float() @ w
    return (aligned * (target / aligned.norm(dim=-1, keepdim=True).clamp_min(1e-6))).to(h.dtype)


@torch.no_grad()
def send(lm, tasks: list[tuple[str, str]], *, prompt_template: str, latent_steps: int, realign_mode: str,
         latent_only: bool, log=None) -> dict[str, Message]:
    """Task id -> the KV message of ``lm`` thinking ``latent_steps`` steps after its planner prompt
    (``kv.BATCH`` tasks at a time); ``sender_ms``: the task's share of its batch's wall time, as
    waited for."""
    w, target = realignment(lm.model, realign_mode)
    out = {}
    for ids, prompts, pad in kv.batches(lm, tasks, prompt_template):
        t0 = clock_ms()
        batch = kv.Batch(lm.model, prompts, pad)
        for _ in range(latent_steps):
            batch.step(realign(batch.last, w, target))
        share = (clock_ms() - t0) / len(ids)
        for row, tid in enumerate(ids):
            shipped = batch.pack(row, last=latent_steps if latent_only else None)
            out[tid] = Message(kind=MessageKind.KV, kv=shipped, layers=tuple(range(len(shipped))), sender_ms=share)
        if log:
            log(len(out), len(tasks))
    return out
