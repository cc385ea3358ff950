"""KVComm's sender (Shi et al.; Zephyroam/KVComm, ``models.py::CVCommunicator``): its prefill KV
of the planner prompt, chosen layers whole; every other layer keeps its first position only (an
attention sink, as ``prepare_key_cache`` keeps it), and the receiver attends to nothing else
there (``methods.prefix_agents``).

``layers``: ``all``, ``first:k``, ``last:k`` (k layers), or the layers themselves (a tuple of
indices): what KVComm's ``top:f`` becomes once calibrated (``methods.kv_share``).
"""

from __future__ import annotations

import torch

from interlat_bench.collectors import kv
from interlat_bench.harness.core.message import Message, MessageKind
from interlat_bench.harness.core.timing import clock_ms

SINK_POSITIONS = 1


def chosen_layers(spec: str | tuple[int, ...], n_layers: int) -> tuple[int, ...]:
    """The layers ``spec`` names among ``n_layers`` (``all``, ``first:k``, ``last:k``, or indices)."""
    if isinstance(spec, tuple):
        if not spec or any(not 0 <= i < n_layers for i in spec):
            raise ValueError(f"layer indices must lie in [0, {n_layers}), got {spec}")
        return tuple(sorted(spec))
    if spec.startswith("top:"):
        raise ValueError(f"layers={spec!r} is chosen on a calibration split first (methods.kv_share)")
    if spec == "all":
        return tuple(range(n_layers))
    where, _, count = spec.partition(":")
    k = int(count)
    if where not in ("first", "last") or not 1 <= k <= n_layers:
        raise ValueError(f"layers must be all, first:k or last:k with 1 <= k <= {n_layers}, got {spec!r}")
    return tuple(range(k)) if where == "first" else tuple(range(n_layers - k, n_layers))


@torch.no_grad()
def send(lm, tasks: list[tuple[str, str]], *, prompt_template: str, layers: str | tuple[int, ...],
         log=None) -> dict[str, Message]:
    """Task id -> the chosen layers of ``lm``'s prefill KV of its planner prompt (``kv.BATCH`` tasks
    at a time; ``sender_ms``: the task's share of its batch's wall time)."""
    whole = chosen_layers(layers, len(kv.decoder_layers(lm.model)))
    out = {}
    for ids, prompts, pad in kv.batches(lm, tasks, prompt_template):
        t0 = clock_ms()
        batch = kv.Batch(lm.model, prompts, pad)
        share = (clock_ms() - t0) / len(ids)
        for row, tid in enumerate(ids):
            out[tid] = Message(kind=MessageKind.KV, kv=batch.pack(row, set(whole), keep_first=SINK_POSITIONS),
                               layers=whole, sender_ms=share)
        if log:
            log(len(out), len(tasks))
    return out
