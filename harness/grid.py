"""Expand CLI choices (methods x tasks x splits x seeds) into RunSpecs."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from interlat_bench.harness.errors import UserError
from interlat_bench.harness.registry import benchmarks, methods
from interlat_bench.harness.runspec import DecodingSpec, RunSpec


def split_csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _decoding_for(decoding: DecodingSpec | None, bcls) -> DecodingSpec:
    """Fill the reply length from the benchmark when the user left it unset (0)."""
    decoding = decoding or DecodingSpec(max_new_tokens=0)
    if not decoding.max_new_tokens:
        decoding = replace(decoding, max_new_tokens=bcls.reply_tokens)
    return decoding


def _limit_for(limit: int | None, bcls, mcls) -> int | None:
    """None: everything on a GPU (or without a model), the benchmark's quick size on a CPU;
    negative: everything."""
    if limit is None and not mcls.uses_model:
        return None
    if limit is None:
        import torch

        return None if torch.cuda.is_available() else bcls.cpu_limit
    return None if limit < 0 else limit


def expand(
    *,
    methods_csv: str,
    tasks_csv: str,
    splits_csv: str | None = None,
    seeds: Iterable[int] = (0,),
    sender: str,
    receiver: str,
    dtype: str = "float32",
    limit: int | None = None,
    decoding: DecodingSpec | None = None,
    method_params: dict[str, Any] | None = None,
    benchmark_params: dict[str, dict[str, Any]] | None = None,
) -> list[RunSpec]:
    method_names = split_csv(methods_csv)
    task_names = split_csv(tasks_csv)
    if not method_names:
        raise UserError("--methods: expected a comma-separated list of method names (see `interlat-bench ls`)")
    if not task_names:
        raise UserError("--tasks: expected a comma-separated list of benchmarks (see `interlat-bench ls`)")
    method_classes = {m: methods.get(m) for m in method_names}  # unknown names fail here
    bench_classes = {t: benchmarks.get(t) for t in task_names}
    given = dict(method_params or {})
    unknown = [k for k in given if not any(k in c.defaults for c in method_classes.values())]
    if unknown:
        raise UserError(f"--param {unknown[0]}: no chosen method takes it "
                        f"({'; '.join(f'{m}: {sorted(c.defaults) or None}' for m, c in method_classes.items())})")
    wanted_splits = split_csv(splits_csv)
    for s in wanted_splits:
        if not any(s in b.splits for b in bench_classes.values()):
            known = "; ".join(f"{t}: {', '.join(b.splits)}" for t, b in bench_classes.items())
            raise UserError(f"--splits: no task has a split {s!r} ({known})")
    specs = []
    for m, mcls in method_classes.items():
        usable = [t for t in task_names if mcls.benchmarks is None or t in mcls.benchmarks]
        if not usable:
            raise UserError(f"method {m!r} runs on {', '.join(mcls.benchmarks)} only, not on {tasks_csv}")
        for t in usable:
            bcls = bench_classes[t]
            splits = [s for s in wanted_splits if s in bcls.splits] or list(bcls.default_splits)
            # Model settings stay out of the key of a method that runs no model: changing
            # --receiver must not replay the oracle.
            model = dict(receiver=receiver, dtype=dtype, decoding=_decoding_for(decoding, bcls)) \
                if mcls.uses_model else dict(receiver=None, dtype=None, decoding=DecodingSpec())
            for split in splits:
                for seed in seeds:
                    specs.append(RunSpec.make(
                        method=m, benchmark=t, split=split, **model,
                        sender=sender if mcls.needs_sender else None, seed=seed,
                        method_params={**mcls.defaults, **{k: v for k, v in given.items() if k in mcls.defaults}},
                        benchmark_params={**bcls.defaults, **mcls.benchmark_defaults.get(t, {}),
                                          **(benchmark_params or {}).get(t, {})},
                        limit=_limit_for(limit, bcls, mcls),
                    ))
    return specs
