"""KVComm's sender (Shi et al.; Zephyroam/KVComm, ``models.py::CVCommunicator``): its prefill KV
of the planner prompt, chosen layers whole; every other layer keeps its first position only (an
attention sink, as ``prepare_key_cache`` keeps it), and the receiver attends to nothing else
there (``methods.prefix_agents``).

``layers``: ``all``, ``first:k``, ``last:k`` (k layers). KVComm's ``top:f`` (layers ranked by the
receiver's attention on a calibration split) is not built yet.
"""

from __future__ import annotations

import torch

from interlat_bench.collectors import kv
from interlat_bench.harness.core.message import Message, MessageKind
from interlat_bench.harness.core.timing import clock_ms

SINK_POSITIONS = 1


def chosen_layers(spec: str, n_layers: int) -> tuple[int, ...]:
    """The layers ``spec`` names among ``n_layers`` (``all``, ``first:k``, ``last:k``)."""
    if spec == "all":
        return tuple(range(n_layers))
    where, _, count = spec.partition(":")
    k = int(count)
    if where not in ("first", "last") or not 1 <= k <= n_layers:
        raise ValueError(f"layers must be all, first:k or last:k with 1 <= k <= {n_layers}, got {spec!r}")
    return tuple(range(k)) if where == "first" else tuple(range(n_layers - k, n_layers))


@torch.no_grad()
def send(lm, tasks: list[tuple[str, str]], *, prompt_template: str, layers: str, log=None) -> dict[str, Message]:
    """Task id -> the chosen layers of ``lm``'s prefill KV of its planner prompt."""
    from interlat_bench.collectors.messages import prompt_ids

    whole = chosen_layers(layers, len(kv.decoder_layers(lm.model)))
    out = {}
    for n, (tid, task) in enumerate(tasks, 1):
        t0 = clock_ms()
        cache = kv.new_cache(lm.model)
        kv.forward(lm.model, cache, ids=prompt_ids(lm.tokenizer, prompt_template, task))
        out[tid] = Message(kind=MessageKind.KV, kv=kv.pack(cache, set(whole), keep_first=SINK_POSITIONS),
                           layers=whole, sender_ms=clock_ms() - t0)
        if log:
            log(n, len(tasks))
    return out
