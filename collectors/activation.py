"""Activation communication's sender (Ramesh & Li 2025; as Zephyroam/KVComm's ``models_ac.py``
runs it): the hidden state entering its layer k at the last token of its prompt.

"Entering layer k" is the output of layer k - 1 (k = 0: the input embeddings), the
``hidden_states[k]`` of a transformers forward; the receiver grafts it where its own layer j
is entered (``methods.prefix_agents.ActivationAgent``).
"""

from __future__ import annotations

import torch

from interlat_bench.collectors import kv
from interlat_bench.harness.core.message import Message, MessageKind
from interlat_bench.harness.core.timing import clock_ms


def entering(layer: torch.nn.Module):
    """A pre-hook on ``layer`` that keeps the hidden states it is given; read them from ``.seen``."""
    class Probe:
        seen: torch.Tensor | None = None

        def __call__(self, module, args, kwargs):
            self.seen = (args[0] if args else kwargs["hidden_states"]).detach()

    probe = Probe()
    return probe, layer.register_forward_pre_hook(probe, with_kwargs=True)


@torch.no_grad()
def read_batch(model, prompts: list[list[int]], pad_id: int, k: int) -> torch.Tensor:
    """The states entering layer ``k`` at each prompt's last token (B x H; the batch is left-padded,
    so that token is every row's last)."""
    probe, handle = entering(kv.decoder_layers(model)[k])
    try:
        kv.Batch(model, prompts, pad_id)
    finally:
        handle.remove()
    return probe.seen[:, -1]


def read(model, prompt: list[int], k: int) -> torch.Tensor:
    """One prompt's state entering layer ``k`` at its last token (H)."""
    return read_batch(model, [prompt], 0, k)[0]


def send(lm, tasks: list[tuple[str, str]], *, prompt_template: str, k: int, log=None) -> dict[str, Message]:
    """Task id -> a one-row ACTIVATION message read at layer ``k`` (``kv.BATCH`` tasks at a time;
    ``sender_ms``: the task's share of its batch's wall time)."""
    from interlat_bench.harness.core.errors import UserError

    n_layers = len(kv.decoder_layers(lm.model))
    if not -n_layers <= k < n_layers:
        raise UserError(f"activation: k={k} is not a layer of a {n_layers}-layer model")
    k %= n_layers
    out = {}
    for ids, prompts, pad in kv.batches(lm, tasks, prompt_template):
        t0 = clock_ms()
        states = read_batch(lm.model, prompts, pad, k)
        share = (clock_ms() - t0) / len(ids)
        for tid, row in zip(ids, states, strict=True):
            out[tid] = Message(kind=MessageKind.ACTIVATION, latents=row[None].clone(), layers=(k,), sender_ms=share)
        if log:
            log(len(out), len(tasks))
    return out
