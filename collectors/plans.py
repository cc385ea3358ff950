"""The collection stage: the sender's plans (text and latents) for a list of tasks, built from
its ``PlanCollection`` spec and cached by content (``collectors.messages``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from interlat_bench.harness.core import progress
from interlat_bench.harness.core.stages import PlanCollection


class Messages(dict):
    """task id -> Message, plus ``key``: the content address of the collection."""

    key: str = ""


def collect_config(spec: PlanCollection):
    """The collector's configuration (its cache key) for this spec."""
    from interlat_bench.collectors.messages import CollectConfig
    from interlat_bench.harness.core.generation import Decoding

    return CollectConfig(sender_model=spec.sender_model, dtype=spec.dtype, prompt_template=spec.prompt_template,
                         decoding=Decoding(greedy=spec.greedy, temperature=spec.temperature, top_p=spec.top_p,
                                           top_k=spec.top_k, max_new_tokens=spec.max_new_tokens),
                         seed=spec.seed, keep_rows=spec.keep_rows)


def collect_plans(spec: PlanCollection, tasks: Sequence[tuple[str, str]]) -> Messages:
    """The plans for ``tasks`` [(id, what the sender plans for)]: collected, or read back from the
    cache (what an earlier invocation generated is marked ``from_cache``)."""
    from interlat_bench.collectors.messages import (
        collect_messages,
        collection_path,
        load_messages,
        stored_ids,
    )

    cfg = collect_config(spec)
    cached = stored_ids(collection_path(cfg, tasks))
    with progress.track(f"collect {cfg.sender_model} plans", sum(t not in cached for t, _ in tasks)) as stage:
        path = collect_messages(cfg, tasks, progress=progress.counter(stage))
    out = Messages({tid: replace(m, from_cache=tid in cached) for tid, m in load_messages(path).items()})
    out.key = path.name
    return out
