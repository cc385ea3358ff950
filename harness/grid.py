"""Grids: a grid file or the command line's choices (methods x tasks x splits x seeds) expanded into RunSpecs."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from interlat_bench.harness.core.errors import UserError
from interlat_bench.harness.core.params import check_params, split_csv, tags
from interlat_bench.harness.core.registry import benchmarks, methods
from interlat_bench.harness.core.runspec import DecodingSpec, RunSpec


def _decoding_for(decoding: DecodingSpec | None, bcls) -> DecodingSpec:
    """Fill the reply length from the benchmark when the user left it unset (0)."""
    decoding = decoding or DecodingSpec(max_new_tokens=0)
    if not decoding.max_new_tokens:
        decoding = replace(decoding, max_new_tokens=bcls.reply_tokens)
    return decoding


ALL = -1  # --limit -1: every sample of the split


def _limit_for(limit: int | None, bcls, mcls) -> int | None:
    """None: everything on a GPU (or without a model), the benchmark's quick size on a CPU;
    ALL: everything."""
    if limit is None and not mcls.uses_model:
        return None
    if limit is None:
        import torch

        return None if torch.cuda.is_available() else bcls.cpu_limit
    return None if limit == ALL else limit


def check_numbers(*, limit: int | None, seeds: Iterable[int], decoding: DecodingSpec | None) -> None:
    """One-line errors for numbers that cannot be right, before anything is run or recorded."""
    if limit is not None and limit != ALL and limit < 1:
        raise UserError(f"--limit {limit}: expected a number of samples >= 1, or {ALL} for all")
    bad_seed = next((s for s in seeds if s < 0), None)
    if bad_seed is not None:
        raise UserError(f"--seeds {bad_seed}: expected integers >= 0")
    seeds = list(seeds)
    twice = next((s for i, s in enumerate(seeds) if s in seeds[:i]), None)
    if twice is not None:  # the same replicate twice would count its samples twice
        raise UserError(f"--seeds {','.join(map(str, seeds))}: seed {twice} is given twice")
    if decoding is not None:
        if decoding.max_new_tokens < 0:  # 0 means: the benchmark's default reply length
            raise UserError(f"--max-new-tokens {decoding.max_new_tokens}: expected a number of tokens >= 1")
        if not decoding.greedy and not decoding.temperature > 0:
            raise UserError(f"--temperature {decoding.temperature}: expected a number > 0")
        if decoding.lookup_tokens < 0:
            raise UserError(f"--lookup-tokens {decoding.lookup_tokens}: expected an integer >= 0 (0 = off)")


def expand(
    *,
    methods_csv: str,
    tasks_csv: str,
    splits_csv: str | None = None,
    seeds: Iterable[int] = (0,),
    sender_model: str,
    receiver_model: str,
    dtype: str = "float32",
    limit: int | None = None,
    decoding: DecodingSpec | None = None,
    method_params: dict[str, Any] | None = None,
    benchmark_params: dict[str, dict[str, Any]] | None = None,
    settings: dict[str, Any] | None = None,
) -> list[RunSpec]:
    """``benchmark_params``: per task; ``settings``: by name, for every chosen benchmark that
    declares the setting (``--setting key=value``)."""
    seeds = list(seeds)
    check_numbers(limit=limit, seeds=seeds, decoding=decoding)
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
    for m, c in method_classes.items():
        for values in method_configs(c, {k: v for k, v in given.items() if k in c.defaults}):
            check_params("--param", values, c.param_checks, f"method {m}")
    benchmark_params = {t: dict((benchmark_params or {}).get(t, {})) for t in task_names}
    for k, v in (settings or {}).items():
        takers = [t for t, b in bench_classes.items() if k in b.defaults]
        if not takers:
            raise UserError(f"--setting {k}: no chosen benchmark takes it "
                            f"({'; '.join(f'{t}: {sorted(b.defaults) or None}' for t, b in bench_classes.items())})")
        for t in takers:
            benchmark_params[t][k] = v
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
            model = dict(receiver_model=receiver_model, dtype=dtype, decoding=_decoding_for(decoding, bcls)) \
                if mcls.uses_model else dict(receiver_model=None, dtype=None, decoding=DecodingSpec())
            bench_params = {**bcls.defaults, **mcls.benchmark_defaults.get(t, {}), **benchmark_params[t]}
            check_params("setting", bench_params, bcls.param_checks, f"benchmark {t}")
            bench_params = {k: v for k, v in bench_params.items()
                            if k not in bcls.unkeyed_defaults or v != bcls.unkeyed_defaults[k]}
            bench = bcls(bench_params)
            for split in splits:
                data = bench.fingerprint(split, with_train=mcls.trained_with is not None)
                base = {**mcls.defaults, **{k: v for k, v in bench.method_defaults.items() if k in mcls.defaults}}
                for params in method_configs(mcls, {k: v for k, v in given.items() if k in mcls.defaults}):
                    for seed in seeds:
                        # A seed is a whole replicate: the receiver is trained with it too.
                        training = mcls({**base, **params}).train_config(bench, seed).key_dict() \
                            if mcls.trained_with is not None else None
                        spec = RunSpec.make(
                            method=m, benchmark=t, split=split, **model,
                            sender_model=(receiver_model if mcls.plans_with_receiver else sender_model) if mcls.needs_sender() else None,
                            seed=seed,
                            method_params={**base, **params}, benchmark_params=bench_params,
                            limit=_limit_for(limit, bcls, mcls), data=data, training=training,
                        )
                        specs.append(with_stages(spec, bench))
    return specs


def with_stages(spec: RunSpec, bench) -> RunSpec:
    """The spec with the stages its method declares for it (``Method.stages``)."""
    method = methods.get(spec.method)(dict(spec.method_params))
    return replace(spec, stages=method.stages(bench, spec))


def method_configs(mcls, given: dict[str, Any]) -> list[dict[str, Any]]:
    """The parameter settings a grid runs for one method: the user's values, where a list
    means one configuration per item, and the method's ``sweep`` for what the user left
    unset. No list and no sweep: one configuration."""
    axes = {k: list(v) for k, v in mcls.sweep.items() if k not in given}
    axes |= {k: (list(v) if isinstance(v, list) else [v]) for k, v in given.items()}
    empty = next((k for k, v in axes.items() if not v), None)
    if empty is not None:
        raise UserError(f"--param {empty}=[]: expected at least one value")
    return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


def concrete_dtype(dtype: str) -> str:
    """Resolve `auto` now so the run key records the dtype actually used."""
    if dtype != "auto":
        from interlat_bench.harness.core.models import resolve_dtype

        resolve_dtype(dtype)  # validates
        return dtype
    import torch

    return "bfloat16" if torch.cuda.is_available() else "float32"


GRID_KEYS = {"note", "methods", "tasks", "splits", "seeds", "sender", "receiver", "limit", "max_steps", "max_new_tokens",
             "dtype", "params", "settings", "tags"}
_INTEGERS = ("limit", "max_steps", "max_new_tokens")


def read_grid(path: Path) -> dict:
    """A grid file as the run options it stands for: lists become comma-separated strings,
    params and settings stay mappings (a list value sweeps, as `--param 'k=[a,b]'` does)."""
    import tomllib
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except OSError as exc:
        raise UserError(f"--grid {path}: cannot read it ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"--grid {path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at {exc.start})") from None
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"--grid {path}: not valid {'TOML' if path.suffix == '.toml' else 'YAML'} "
                        f"({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"--grid {path}: expected a mapping of run options ({', '.join(sorted(GRID_KEYS))})")
    unknown = sorted(set(data) - GRID_KEYS)
    if unknown:
        raise UserError(f"--grid {path}: unknown key {unknown[0]!r} (expected {', '.join(sorted(GRID_KEYS))})")
    out = {}
    for key, value in data.items():
        if key in ("params", "settings"):
            if not isinstance(value, dict):
                raise UserError(f"--grid {path}: {key} must be a mapping of name: value")
            out[key] = value
        elif isinstance(value, list):
            out[key] = ",".join(str(v) for v in value)
        elif key in _INTEGERS and not isinstance(value, int):
            raise UserError(f"--grid {path}: {key} must be an integer, got {value!r}")
        else:
            out[key] = value if key in _INTEGERS else str(value)
    return out


@dataclass(frozen=True)
class Grid:
    """What `run` was asked for: the cells, the labels for their runs, the grid file's note."""

    specs: list[RunSpec]
    tags: list[str]
    note: str | None = None


def from_options(grid: Path | None, given: dict[str, Any], *, params: dict[str, Any], settings: dict[str, Any],
                 tag_values: list[str], sample: bool = False, temperature: float = 0.7,
                 lookup_tokens: int = 8) -> Grid:
    """The run's cells from its options (``given``: methods, tasks, splits, sender, receiver, seeds,
    limit, max_steps, max_new_tokens, dtype; None where unset) over a grid file's, which the
    command line overrides key by key."""
    file = read_grid(grid) if grid else {}
    chosen = {k: v if v is not None else file.get(k) for k, v in given.items()}
    if not chosen["methods"] or not chosen["tasks"]:
        raise UserError("give --methods and --tasks (or a --grid file with methods and tasks)")
    seeds = "0" if chosen["seeds"] is None else chosen["seeds"]  # given empty: a slip, not seed 0
    try:
        seed_list = [int(s) for s in split_csv(seeds)]
    except ValueError:
        seed_list = []
    if not seed_list:
        raise UserError(f"--seeds {seeds!r}: expected comma-separated integers")
    max_steps = chosen["max_steps"]
    specs = expand(
        methods_csv=chosen["methods"], tasks_csv=chosen["tasks"], splits_csv=chosen["splits"], seeds=seed_list,
        sender_model=chosen["sender"] or "smollm2-135m", receiver_model=chosen["receiver"] or "smollm2-135m",
        dtype=concrete_dtype(chosen["dtype"] or "auto"), limit=chosen["limit"],
        decoding=DecodingSpec(greedy=not sample, temperature=temperature,
                              max_new_tokens=chosen["max_new_tokens"] or 0, lookup_tokens=lookup_tokens),
        method_params={**file.get("params", {}), **params},
        settings={**file.get("settings", {}), **settings, **({"max_steps": max_steps} if max_steps is not None else {})},
    )
    return Grid(specs, tags([*tag_values, *split_csv(file.get("tags"))]), file.get("note"))


def swept_params(specs: list[RunSpec]) -> set[str]:
    """The method parameters whose value differs between cells of one method: what tells a
    sweep's cells apart in a listing."""
    return {k for s in specs for k, _ in s.method_params
            if len({dict(o.method_params).get(k) for o in specs if o.method == s.method}) > 1}
