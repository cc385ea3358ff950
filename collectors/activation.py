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
def read(model, prompt: list[int], k: int) -> torch.Tensor:
    """The state entering layer ``k`` at the prompt's last token (H)."""
    probe, handle = entering(kv.decoder_layers(model)[k])
    try:
        kv.forward(model, kv.new_cache(model), ids=prompt)
    finally:
        handle.remove()
    return probe.seen[0, -1]


def send(lm, tasks: list[tuple[str, str]], *, prompt_template: str, k: int, log=None) -> dict[str, Message]:
    """Task id -> a one-row ACTIVATION message read at layer ``k``; ``sender_ms``: its wall time."""
    from interlat_bench.collectors.messages import prompt_ids
    from interlat_bench.harness.core.errors import UserError

    n_layers = len(kv.decoder_layers(lm.model))
    if not -n_layers <= k < n_layers:
        raise UserError(f"activation: k={k} is not a layer of a {n_layers}-layer model")
    k %= n_layers
    out = {}
    for n, (tid, task) in enumerate(tasks, 1):
        t0 = clock_ms()
        row = read(lm.model, prompt_ids(lm.tokenizer, prompt_template, task), k)
        out[tid] = Message(kind=MessageKind.ACTIVATION, latents=row[None], layers=(k,), sender_ms=clock_ms() - t0)
        if log:
            log(n, len(tasks))
    return out
