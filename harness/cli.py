"""The `interlat-bench` command line. Heavy imports (torch, transformers) happen inside
commands, so `--help` and `ls` stay fast."""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from pathlib import Path

import typer
from rich.console import Console

from interlat_bench.harness.core.atomic import check_writable
from interlat_bench.harness.core.errors import UserError
from interlat_bench.harness.entry import INTERRUPTED

app = typer.Typer(help="Benchmark and ablation harness for agents that communicate in latent space.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]})
# Off a terminal: wide enough for any cell, while rich sizes a table to its content.
WHOLE_CELLS_WIDTH = 10_000


def _console(**kwargs) -> Console:
    """A terminal's tables fit its width. Off a terminal (a pipe, a file) there is no width to fit,
    so rich's default of 80 columns would cut cells to "conf…": there every cell is printed whole
    (COLUMNS, where set, still wins)."""
    screen = Console(soft_wrap=True, emoji=False, **kwargs)  # a path "x.py:x:" is text, not an emoji
    if not screen.is_terminal and not os.environ.get("COLUMNS"):
        screen.width = WHOLE_CELLS_WIDTH
    return screen


console = _console()
err = _console(stderr=True)

DbOpt = typer.Option(None, "--db", help="Results database (default: $INTERLAT_RESULTS/interlat.duckdb, else ./interlat-results/).")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress or notes on stderr; tables and errors still print.")
VerboseOpt = typer.Option(False, "--verbose", "-v", help="Also each sample's outcome and library warnings.")
LogFileOpt = typer.Option(None, "--log-file", help="Append progress, notes and warnings, with times, to this file.")


MethodPathOpt = typer.Option([], "--method-path", help="A method class to use without packaging it: "
                             "package.module:Class or path/to/file.py:Class (repeatable).")


def _method_paths(refs: list[str]) -> None:
    from interlat_bench.harness.core.registry import methods

    for ref in refs:
        methods.add_path(ref, "--method-path")


def _note(message: str) -> None:
    """A note on stderr (quiet under -q) and in the log file."""
    from interlat_bench.harness.terminal import log

    log.info(message)


@contextlib.contextmanager
def user_errors():
    """Turn UserError into one line on stderr and a non-zero exit (2 for unknown names)."""
    try:
        yield
    except UserError as e:
        err.print(f"[bold red]error:[/bold red] {e}", highlight=False)
        raise typer.Exit(e.exit_code) from None
    except PermissionError as e:  # a folder or file of someone else's, or read-only
        err.print(f"[bold red]error:[/bold red] permission denied: {e.filename or e}", highlight=False)
        raise typer.Exit(1) from None
    except (IsADirectoryError, NotADirectoryError) as e:  # a folder where a file goes, or the other way
        where = e.filename2 or e.filename
        err.print(f"[bold red]error:[/bold red] {where}: {e.strerror.lower()} (a folder and a file in each "
                  "other's place)", highlight=False)
        raise typer.Exit(1) from None
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise
        _stored_intact(e.strerror, e.filename)
    except Exception as e:
        if not _disk_full(e):
            raise
        _stored_intact("No space left on device", None)


def _disk_full(exc: Exception) -> bool:
    """DuckDB reports a full disk as its own error (a failed write of the database or its WAL)."""
    return type(exc).__module__.split(".")[0] in ("duckdb", "_duckdb") and "No space left on device" in str(exc)


def _stored_intact(what: str, filename: str | None) -> None:
    # Files are written whole or not at all (harness.core.atomic) and ingest is one transaction.
    where = f" ({filename})" if filename else ""
    err.print(f"[bold red]error:[/bold red] {what}{where}: what was stored before is intact; "
              "make room (or choose another folder) and run again", highlight=False)
    raise typer.Exit(1) from None


def _check_cache() -> None:
    """A read-only cache found before any work: found midway, it failed a run that was
    complete (its status turned `failed`)."""
    from interlat_bench.harness.core.settings import CACHE_ENV, cache_dir

    check_writable(cache_dir(), "cache folder", f"choose another with ${CACHE_ENV}")


def _existing_db(db: Path | None) -> Path:
    """The results database to read, which must exist (readers never create one)."""
    path = _db(db)
    if not path.exists():
        shards = path.parent / "shards"
        if any(shards.glob("*/*.jsonl")):  # a run killed before its first ingest
            raise UserError(f"no results database at {path} yet, but finished samples wait in {shards}: "
                            "load them with `interlat-bench ingest`")
        raise UserError(f"no results database at {path}: run `interlat-bench run ...` first")
    return path


def _table_format(format: str, allowed: tuple[str, ...] = ("rich", "md", "csv")) -> str:
    if format not in allowed:
        raise UserError(f"--format {format!r}: expected {', '.join(allowed[:-1])} or {allowed[-1]}")
    return format


def _refuse_unknown(flag: str, name: str, present: list[str], what: str, listed: str) -> None:
    """A name the results do not hold is a typo, not an empty table: one line with the
    closest name and what there is."""
    import difflib

    if name not in present:
        close = difflib.get_close_matches(name, present, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UserError(f"{flag} {name!r}: {what}{hint} ({listed}: {', '.join(present) or 'none yet'})")


def _known_in_db(db: Path, column: str, wanted: list[str], flag: str) -> None:
    from interlat_bench.results.store import Store

    with Store(db).reader() as con:
        present = sorted({r[0] for r in con.execute(f"SELECT DISTINCT {column} FROM runs").fetchall() if r[0]})
    for name in wanted:
        _refuse_unknown(flag, name, present, f"no such {column} in {db}", "present")


def _known_run_keys(db: Path, prefixes: list[str]) -> None:
    from interlat_bench.results.store import Store

    with Store(db).reader() as con:
        keys = [r[0] for r in con.execute("SELECT run_key FROM runs").fetchall()]
    for prefix in prefixes:
        if not any(k.startswith(prefix) for k in keys):
            raise UserError(f"--run-key {prefix!r}: no run's key starts so (see `interlat-bench runs`)")


BUILTIN_METRICS = ("success", "score", "steps", "steps_success")
RUN_STATUSES = ("running", "complete", "partial", "interrupted", "failed")


def _metric_keys(db: Path) -> list[str]:
    """The keys some sample's metrics JSON holds (what --metric and --by may name)."""
    from interlat_bench.results.store import Store

    with Store(db).reader() as con:
        return sorted({k for (k,) in con.execute(
            "SELECT DISTINCT unnest(json_keys(metrics)) FROM samples WHERE metrics IS NOT NULL").fetchall()}
            - {"transcript", "traceback", "actions"})


def _known_metric(db: Path, metric: str, flag: str = "--metric") -> None:
    """A metric is a built-in one or a metrics key (its first part, for a dotted path)."""
    if metric in BUILTIN_METRICS:
        return
    keys = _metric_keys(db)
    if metric.split(".")[0] not in keys:
        _refuse_unknown(flag, metric, [*BUILTIN_METRICS, *keys], f"no such metric in {db}", "known")


def _known_by(db: Path, by: str | None) -> None:
    """--by names a metrics key; an unknown one would give a column of '-'."""
    if by is None:
        return
    keys = _metric_keys(db)
    if by.split(".")[0] not in keys:
        _refuse_unknown("--by", by, keys, f"no such metrics key in {db}", "known")


def _known_tags(db: Path, tags: list[str]) -> None:
    from interlat_bench.results.store import Store

    with Store(db).reader() as con:
        present = sorted({t for (t,) in con.execute("SELECT DISTINCT unnest(tags) FROM runs").fetchall()})
    for tag in tags:
        _refuse_unknown("--tag", tag, present, f"no run has this tag in {db}", "tags; `run --tag` sets them")


def _db(db: Path | None) -> Path:
    from interlat_bench.harness.core.settings import default_db

    path, folder = db or default_db(), False
    with contextlib.suppress(OSError):  # an unreadable folder above it is for the command to report
        folder = path.is_dir()
    if folder:
        raise UserError(f"--db {path}: a folder stands where the results database file should be "
                        "(give the .duckdb file)")
    return path


def _params(values: list[str], flag: str = "--param") -> dict:
    import json

    out = {}
    for v in values:
        if "=" not in v:
            raise UserError(f"{flag} {v!r}: expected key=value")
        k, raw = v.split("=", 1)
        try:
            out[k.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[k.strip()] = raw
    return out


GRID_KEYS = {"note", "methods", "tasks", "splits", "seeds", "sender", "receiver", "limit", "max_steps", "max_new_tokens",
             "dtype", "params", "settings", "tags"}
TAG = r"[A-Za-z0-9][A-Za-z0-9_.:-]*"


def _tags(values: list[str], flag: str = "--tag") -> list[str]:
    import re

    tags = [t for v in values for t in v.split(",") if t]
    for tag in tags:
        if not re.fullmatch(TAG, tag):
            raise UserError(f"{flag} {tag!r}: expected letters, digits, '_', '.', ':' or '-'")
    return tags


def _check_models(specs) -> None:
    """Every model the grid uses can load here: checked before any model loads or any run row
    is written."""
    from interlat_bench.harness.core.models import check_ref

    for flag, refs in (("--receiver", {s.receiver for s in specs}), ("--sender", {s.sender for s in specs})):
        for ref in sorted(r for r in refs if r is not None):
            check_ref(ref, flag)


def _read_grid(path: Path) -> dict:
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
        elif key in ("limit", "max_steps", "max_new_tokens") and not isinstance(value, int):
            raise UserError(f"--grid {path}: {key} must be an integer, got {value!r}")
        else:
            out[key] = str(value) if key not in ("limit", "max_steps", "max_new_tokens") else value
    return out


@app.command()
def run(
    methods: str | None = typer.Option(None, "--methods", "-m", help="Comma-separated method names."),
    tasks: str | None = typer.Option(None, "--tasks", "-t", help="Comma-separated benchmarks (math, alfworld)."),
    grid: Path | None = typer.Option(None, "--grid", "-g", help="A grid file (YAML or TOML): methods, tasks, "
                                     "splits, seeds, sender, receiver, limit, params, settings, ...; options "
                                     "given on the command line override it."),
    splits: str | None = typer.Option(None, help="Comma-separated splits (default: each task's default)."),
    sender: str | None = typer.Option(None, help="Sender model reference (default smollm2-135m)."),
    receiver: str | None = typer.Option(None, help="Receiver model reference (default smollm2-135m)."),
    seeds: str | None = typer.Option(None, help="Comma-separated seeds (default 0)."),
    limit: int | None = typer.Option(
        None, help="First N samples of each split (-1: all). Default: all on a GPU; on a CPU each task's quick size."),
    max_steps: int | None = typer.Option(
        None, min=1, help="ALFWorld step cap per episode (default 20, as in the paper; the oracle policy gets 200)."),
    max_new_tokens: int | None = typer.Option(None, min=1, help="Receiver tokens per reply (default per task)."),
    sample: bool = typer.Option(False, "--sample", help="Seeded sampling instead of greedy decoding."),
    temperature: float = typer.Option(0.7, help="Sampling temperature (with --sample)."),
    lookup_tokens: int = typer.Option(
        8, min=0, help="Prompt lookup draft length for greedy receivers (0 = off). Speed only: same tokens."),
    dtype: str = typer.Option("auto", help="auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16."),
    param: list[str] = typer.Option([], "--param", "-p", help="Method parameter key=value (repeatable)."),
    setting: list[str] = typer.Option(
        [], "--setting", "-s", help="Benchmark setting key=value, e.g. n_options=8 for probe (repeatable)."),
    workers: int = typer.Option(2, min=1, help="Worker processes for reference policies' episodes (oracle, random)."),
    # The default is harness.runner.EVAL_BATCH (a test keeps them equal; importing the runner
    # here would slow `--help`).
    eval_batch: int = typer.Option(
        16, min=1, help="Replies decoded together on single-reply tasks (math, probe); 1 = one at a time, "
        "for per-sample latency. Speed only: each reply is the one decoded alone (up to float rounding)."),
    episode_batch: int | None = typer.Option(
        None, min=1, show_default="16 on CUDA, 1 on a CPU",
        help="Games of a multi-turn task (alfworld, free generation) played in lockstep, each turn's replies "
        "decoded in one batch; 1 = one game at a time (with prompt lookup). Speed only: each reply is the one "
        "decoded alone (up to float rounding)."),
    episode_workers: int = typer.Option(
        1, min=1, help="Processes playing LLM episodes of multi-turn tasks (alfworld), each with its own copy "
        "of the receiver and a share of the CPU threads (a game's engine then runs beside another's decoding)."),
    db: Path | None = DbOpt,
    leaderboard_after: bool = typer.Option(True, "--leaderboard/--no-leaderboard"),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the cells and samples to compute; run nothing."),
    tag: list[str] = typer.Option([], "--tag", help="Label the runs (repeatable; not part of the run key): "
                                  "`leaderboard --tag` and `runs --tag` filter on it."),
    method_path: list[str] = MethodPathOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
    log_file: Path | None = LogFileOpt,
):
    """Expand the grid and run every cell; finished samples are skipped (resume)."""
    with user_errors():
        from interlat_bench.harness import terminal

        terminal.setup(err, quiet=quiet, verbose=verbose, log_file=log_file)
        _method_paths(method_path)
        from interlat_bench.harness.core.runspec import DecodingSpec
        from interlat_bench.harness.grid import expand, split_csv

        given = dict(methods=methods, tasks=tasks, splits=splits, sender=sender, receiver=receiver, seeds=seeds,
                     limit=limit, max_steps=max_steps, max_new_tokens=max_new_tokens,
                     dtype=None if dtype == "auto" else dtype)
        file = _read_grid(grid) if grid else {}
        chosen = {k: v if v is not None else file.get(k) for k, v in given.items()}
        methods, tasks, splits = chosen["methods"], chosen["tasks"], chosen["splits"]
        if not methods or not tasks:
            raise UserError("give --methods and --tasks (or a --grid file with methods and tasks)")
        sender, receiver = chosen["sender"] or "smollm2-135m", chosen["receiver"] or "smollm2-135m"
        seeds = "0" if chosen["seeds"] is None else chosen["seeds"]  # given empty: a slip, not seed 0
        limit, max_steps = chosen["limit"], chosen["max_steps"]
        max_new_tokens, dtype = chosen["max_new_tokens"], chosen["dtype"] or "auto"
        try:
            seed_list = [int(s) for s in split_csv(seeds)]
        except ValueError:
            seed_list = []
        if not seed_list:
            raise UserError(f"--seeds {seeds!r}: expected comma-separated integers")
        specs = expand(
            methods_csv=methods, tasks_csv=tasks, splits_csv=splits, seeds=seed_list, sender=sender,
            receiver=receiver, dtype=_concrete_dtype(dtype), limit=limit,
            decoding=DecodingSpec(greedy=not sample, temperature=temperature, max_new_tokens=max_new_tokens or 0,
                                  lookup_tokens=lookup_tokens),
            method_params={**file.get("params", {}), **_params(param)},
            settings={**file.get("settings", {}), **_params(setting, "--setting"),
                      **({"max_steps": max_steps} if max_steps is not None else {})},
        )
        _check_models(specs)
        tags = _tags([*tag, *split_csv(file.get("tags"))])
        if dry_run:
            _print_plan(specs, _db(db))
            return
        check_writable(_db(db).parent, "results folder")
        _check_cache()
        _run_with_progress(specs, _db(db), workers, tags, eval_batch, episode_workers, episode_batch)
        if leaderboard_after:
            try:
                _leaderboards_after_run(specs, _db(db), note=file.get("note"))
            except UserError as exc:  # e.g. another run holds the database: the results are safe
                err.print(f"leaderboard skipped: {exc}")


def _leaderboards_after_run(specs, db: Path, note: str | None = None) -> None:
    shown = sorted({s.method for s in specs}), sorted({s.benchmark for s in specs})
    _print_leaderboard(db, *shown, None, "success", "rich")
    _print_chance(specs)
    if "alfworld" in shown[1]:  # SPEC section 7: steps over successes and over all episodes
        _print_leaderboard(db, shown[0], ["alfworld"], None, "steps_success", "rich")
        _print_leaderboard(db, shown[0], ["alfworld"], None, "steps", "rich")
        _print_leaderboard(db, shown[0], ["alfworld"], None, "valid_actions", "rich")
    _print_against_no_comm(specs, db)
    if note:  # the grid file's own words on what its table shows
        console.print(note.strip(), highlight=False)


def _print_against_no_comm(specs, db: Path) -> None:
    """Where a run has a no_comm run beside it (same benchmark, settings, split and seed): is its
    success rate above no communication beyond both 95% intervals? That is what tells a channel
    that carries something from one that does not."""
    from itertools import groupby

    from interlat_bench.results.leaderboard import versus

    def cell(spec):
        return spec.benchmark, spec.split, repr(spec.benchmark_params), spec.seed

    for (bench, split, _, seed), group in groupby(sorted(specs, key=cell), key=cell):
        runs = {s.method: s.run_key for s in group if s.receiver is not None}
        if "no_comm" not in runs or len(runs) < 2:
            continue
        for v in versus(db, runs, "no_comm"):
            said = {"above": "above no_comm beyond both intervals",
                    "below": "below no_comm beyond both intervals",
                    "within": "not told apart from no_comm (intervals overlap)"}[v.verdict]
            console.print(f"{bench}/{split} seed {seed}: {v.label} {100 * v.k / max(v.n, 1):.1f}% "
                          f"[{100 * v.interval[0]:.1f}, {100 * v.interval[1]:.1f}] n={v.n} vs no_comm "
                          f"{100 * v.reference_k / max(v.reference_n, 1):.1f}% [{100 * v.reference_interval[0]:.1f}, "
                          f"{100 * v.reference_interval[1]:.1f}] n={v.reference_n}: {said}", highlight=False)


def _print_plan(specs, db: Path) -> None:
    """The grid's cells with their parameters, samples to compute and what trains them."""
    from rich.table import Table

    from interlat_bench.harness.runner import plan_grid

    swept = sorted({k for s in specs for k, v in s.method_params
                    if len({dict(o.method_params).get(k) for o in specs if o.method == s.method}) > 1})
    t = Table("method", "params", "benchmark/split", "seed", "samples", "done", "to compute",
              "receiver trained with", "run key", title=f"dry run: {len(specs)} cells, nothing run")
    todo = 0
    for cell in plan_grid(specs, db):
        s = cell.spec
        params = ", ".join(f"{k}={v}" for k, v in s.method_params if k in swept)
        t.add_row(s.method, params, f"{s.benchmark}/{s.split}", str(s.seed), str(cell.total), str(cell.done),
                  str(cell.total - cell.done), cell.trains, s.run_key)
        todo += cell.total - cell.done
    console.print(t)
    console.print(f"{todo} samples to compute in {len(specs)} cells")


def _concrete_dtype(dtype: str) -> str:
    """Resolve `auto` now so the run key records the dtype actually used."""
    if dtype != "auto":
        from interlat_bench.harness.core.models import resolve_dtype

        resolve_dtype(dtype)  # validates
        return dtype
    import torch

    return "bfloat16" if torch.cuda.is_available() else "float32"


def _run_with_progress(specs, db: Path, workers: int, tags: list[str], eval_batch: int,
                       episode_workers: int, episode_batch: int | None = None) -> None:
    from interlat_bench.harness.runner import run_grid
    from interlat_bench.harness.terminal import log

    def on_start(spec, total, todo):
        log.info(f"{spec.label()}  key {spec.run_key}: {total - todo} done, {todo} to compute")

    def on_sample(record):
        log.debug(f"  {record.sample_id}: " + ("error" if record.error else ("ok" if record.success else "x")))

    results = run_grid(specs, db, log=log.info, on_sample=on_sample, on_start=on_start, workers=workers,
                       tags=tuple(tags), eval_batch=eval_batch, episode_workers=episode_workers,
                       episode_batch=episode_batch)
    computed = sum(r.computed for r in results)
    errors = sum(r.errors for r in results)
    console.print(f"{len(results)} runs, {computed} samples computed, {errors} errors; results in {db}")
    _print_run_rates(db, [r.spec for r in results if r.spec.receiver is not None])


def _print_chance(specs) -> None:
    """The chance level of each benchmark configuration that has one (e.g. the probe)."""
    from interlat_bench.harness.core.registry import benchmarks

    done = set()
    for spec in specs:
        bench = benchmarks.get(spec.benchmark)(dict(spec.benchmark_params))
        if bench.chance is not None and (spec.benchmark, spec.benchmark_params) not in done:
            done.add((spec.benchmark, spec.benchmark_params))
            console.print(f"{spec.benchmark}: chance {100 * bench.chance:.1f}% ({bench.chance_note()})",
                          highlight=False)


def _print_run_rates(db: Path, specs) -> None:
    """Per run: replies cut by the token cap, and the benchmark's own rates (plans that state
    the probe's answer, MATH replies with a \\boxed answer)."""
    if not specs or not db.exists():
        return
    from interlat_bench.results.store import Store

    with Store(db).reader() as con:
        rows = dict((k, (n, t)) for k, n, t in con.execute(
            "select run_key, count(*), sum(try_cast(metrics->>'truncated' as integer)) from samples "
            "where list_contains(?, run_key) group by 1", [[s.run_key for s in specs]]).fetchall())
        def rate(key: str) -> dict:
            return {k: (n, a) for k, n, a in con.execute(
                f"select run_key, count(metrics->>'{key}'), sum(try_cast(metrics->>'{key}' as integer)) "
                "from samples where list_contains(?, run_key) group by 1", [[s.run_key for s in specs]]).fetchall()}

        carried, boxed = rate("answer_in_plan"), rate("boxed")
    for spec in specs:
        where = f"{spec.method} | {spec.benchmark}/{spec.split}"
        n, cut = rows.get(spec.run_key, (0, None))
        if n and cut is not None:
            console.print(f"  replies cut at {spec.decoding.max_new_tokens} tokens: {int(cut)}/{n} samples "
                          f"({100 * cut / n:.0f}%) | {where}", highlight=False)
        for label, counts in (("plans that state the answer", carried), ("replies with a \\boxed answer", boxed)):
            n, hits = counts.get(spec.run_key, (0, None))
            if n and hits is not None:
                console.print(f"  {label}: {int(hits)}/{n} ({100 * hits / n:.0f}%) | {where}", highlight=False)


def _diagnostic_marks() -> dict:
    """Benchmark settings that make a row a diagnostic (named in every label that has them)."""
    from interlat_bench.harness.core.registry import benchmarks

    return {k: v for _, cls in benchmarks.items() for k, v in cls.diagnostics.items()}


def _print_leaderboard(db, methods, benchmarks, splits, metric, fmt, by: str | None = None,
                       senders=None, receivers=None, filters=None) -> None:
    from interlat_bench.results import leaderboard as lb

    table = lb.leaderboard(db, methods=methods, benchmarks=benchmarks, splits=splits, metric=metric,
                           marks=_diagnostic_marks(), by=by, senders=senders, receivers=receivers, filters=filters)
    if not table.rows and fmt == "rich":  # say why rather than print an empty frame
        why = "no successful episode yet" if metric == "steps_success" else "no recorded values"
        console.print(f"{metric}: {why}")
        return
    if fmt == "md":
        typer.echo(lb.render_markdown(table))
    elif fmt == "json":
        typer.echo(lb.render_json(table))
    elif fmt == "csv":
        typer.echo(lb.render_csv(table), nl=False)
    else:
        console.print(lb.render_rich(table))


@app.command()
def leaderboard(
    methods: str | None = typer.Option(None, "--methods", "-m"),
    tasks: str | None = typer.Option(None, "--tasks", "-t"),
    splits: str | None = typer.Option(None),
    metric: str = typer.Option("success", help="success, score, steps, steps_success or a metrics JSON key."),
    format: str = typer.Option("rich", "--format", "-f", help="rich, md, csv or json."),
    by: str | None = typer.Option(None, "--by", help="Split each column by a metrics key: level, subject, "
                                  "task_type, ..."),
    sender: str | None = typer.Option(None, help="Only runs with these senders (comma-separated)."),
    receiver: str | None = typer.Option(None, help="Only runs with these receivers (comma-separated)."),
    tag: list[str] = typer.Option([], "--tag", help="Only runs with one of these tags (repeatable)."),
    run_key: list[str] = typer.Option([], "--run-key", "-k", help="Only these runs: keys or prefixes (repeatable)."),
    param: list[str] = typer.Option([], "--param", "-p", help="Only runs whose method parameter or benchmark "
                                    "setting has this value, key=value (repeatable)."),
    unfinished: bool = typer.Option(False, "--unfinished", help="Also read running, interrupted and failed runs "
                                    "(left out by default: their samples are a partial, biased subset)."),
    db: Path | None = DbOpt,
):
    """Method x (task, split) table; every cell has n and a 95% interval."""
    with user_errors():
        from interlat_bench.harness.grid import split_csv
        from interlat_bench.results.leaderboard import Filters

        _table_format(format, ("rich", "md", "csv", "json"))
        path = _existing_db(db)
        for column, value, flag in (("method", methods, "--methods"), ("benchmark", tasks, "--tasks"),
                                    ("split", splits, "--splits"), ("sender", sender, "--sender"),
                                    ("receiver", receiver, "--receiver")):
            _known_in_db(path, column, split_csv(value), flag)
        _known_metric(path, metric)
        _known_by(path, by)
        tags = _tags(tag)
        _known_tags(path, tags)
        _known_run_keys(path, run_key)
        filters = Filters(tags=tags or None, run_keys=run_key or None, params=_params(param) or None,
                          unfinished=unfinished)
        _print_leaderboard(path, split_csv(methods) or None, split_csv(tasks) or None,
                           split_csv(splits) or None, metric, format, by, split_csv(sender) or None,
                           split_csv(receiver) or None, filters)


@app.command()
def runs(
    keys: list[str] = typer.Argument(None, help="Run keys (or unique prefixes) to show or prune."),
    status: str | None = typer.Option(None, help="Only runs with this status: running, complete, partial, "
                                      "interrupted, failed."),
    prune: bool = typer.Option(False, "--prune", help="Delete the chosen runs (keys, or --status) with their "
                               "samples, timings and pending shards."),
    tag: list[str] = typer.Option([], "--tag", help="Only runs with one of these tags (repeatable)."),
    format: str = typer.Option("rich", "--format", "-f", help="rich, md or csv."),
    db: Path | None = DbOpt,
):
    """List runs: key, configuration, benchmark/split, status, samples (errors), started, git sha, tags."""
    with user_errors():
        import shutil

        from interlat_bench.results.leaderboard import run_rows
        from interlat_bench.results.shards import ingest as do_ingest
        from interlat_bench.results.store import Store
        from interlat_bench.results.store import prune as prune_runs

        _table_format(format)
        if status is not None and status not in RUN_STATUSES:
            raise UserError(f"--status {status!r}: expected one of {', '.join(RUN_STATUSES)}")
        _existing_db(db)
        store = Store(_db(db))
        do_ingest(store, _db(db).parent / "shards", warn=err.print)  # statuses as of now
        with store.reader() as con:
            rows = con.execute("""
                SELECT r.run_key, r.method, r.benchmark || '/' || r.split, r.status,
                       count(s.sample_id), count(s.error), strftime(r.created_at, '%Y-%m-%d %H:%M'),
                       coalesce(left(r.git_sha, 8), '-'), r.seed, coalesce(r.tags, [])
                FROM runs AS r LEFT JOIN samples AS s USING (run_key)
                GROUP BY ALL ORDER BY 7, 1""").fetchall()
        labels = dict(run_rows(_db(db), marks=_diagnostic_marks()).itertuples(index=False, name=None))
        if keys:
            chosen = []
            for k in keys:
                hits = [r for r in rows if r[0].startswith(k)]
                if len(hits) != 1:
                    raise UserError(f"run key {k!r}: {'no run' if not hits else f'{len(hits)} runs'} "
                                    "match; see `interlat-bench runs`")
                chosen += hits
            rows = chosen
        if status:
            rows = [r for r in rows if r[3] == status]
        if tag:
            wanted = set(_tags(tag))
            rows = [r for r in rows if wanted & set(r[9])]
        if prune:
            if not keys and not status and not tag:
                raise UserError("--prune: name the runs (keys), a --status or a --tag, e.g. --status interrupted")
            gone = prune_runs(store, [r[0] for r in rows])
            for r in rows:
                shutil.rmtree(_db(db).parent / "shards" / r[0], ignore_errors=True)
            console.print(f"pruned {gone} runs")
            return
        header = ["run key", "configuration", "benchmark/split", "seed", "status", "samples", "errors", "started",
                  "git", "tags"]
        table = [[r[0], labels.get(r[0], r[1]), r[2], str(r[8]), r[3], str(r[4]), str(r[5]), r[6] or "-", r[7],
                  ",".join(r[9])] for r in rows]
        if format == "csv":
            import csv
            import io

            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerows([header, *table])
            typer.echo(buf.getvalue(), nl=False)
        elif format == "md":
            typer.echo("\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                                   *["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in table]]))
        else:
            from rich.markup import escape
            from rich.table import Table

            out = Table(*header, title=f"{len(table)} runs in {_db(db)}")
            for r in table:
                out.add_row(*[escape(c) for c in r])
            console.print(out)


@app.command()
def show(
    run_key: str = typer.Argument(..., help="A run key or a unique prefix (see `interlat-bench runs`)."),
    sample_id: str | None = typer.Argument(None, help="A sample id, or a unique part of one; without it, "
                                           "the run's samples are listed."),
    db: Path | None = DbOpt,
):
    """Print one episode: the sender's plan, every turn the receiver saw and wrote, the outcome.
    With a run key alone: the run's samples, one line each."""
    with user_errors():
        import json

        from rich.text import Text

        from interlat_bench.results.store import Store

        _existing_db(db)
        if sample_id is None:
            _list_samples(Store(_db(db)), run_key)
            return
        with Store(_db(db)).reader() as con:
            hits = con.execute("""
                SELECT r.run_key, r.method, r.benchmark, r.split, r.sender, r.receiver, s.sample_id, s.success,
                       s.score, s.steps, s.error, CAST(s.metrics AS VARCHAR)
                FROM samples AS s JOIN runs AS r USING (run_key)
                WHERE starts_with(r.run_key, ?) AND contains(s.sample_id, ?)
                ORDER BY s.sample_id = ? DESC, r.run_key, s.sample_id LIMIT 6""",
                               [run_key, sample_id, sample_id]).fetchall()
        exact = [h for h in hits if h[6] == sample_id]
        hits = exact[:1] if len(exact) == 1 else hits
        if len(hits) != 1:
            found = ", ".join(f"{h[0][:8]}/{h[6]}" for h in hits[:5]) or "none"
            raise UserError(f"show {run_key} {sample_id}: expected one sample, found {found} "
                            "(see `interlat-bench runs` and `interlat-bench sql`)")
        key, method, bench, split, sender, receiver, sid, success, score, steps, error, metrics = hits[0]
        metrics = json.loads(metrics or "{}")
        outcome = f"error: {error}" if error else f"success {bool(success)}, score {score}, steps {steps}"
        console.print(Text(f"{method} | {bench}/{split} | {sender or '-'} -> {receiver or '-'} | run {key}\n"
                           f"sample {sid}: {outcome}", style="bold"))
        turns = metrics.get("transcript")
        if not turns:
            console.print("no transcript stored for this sample (a reference policy, or a run recorded before "
                          "transcripts); its actions: " + json.dumps(metrics.get("actions", [])))
            return
        styles = {"plan": "magenta", "user": "cyan", "assistant": "green", "note": "dim"}
        for turn in turns:
            console.print(Text(f"[{turn['role']}]", style=f"bold {styles.get(turn['role'], '')}"))
            console.print(Text(turn["content"]))


def _list_samples(store, run_key: str) -> None:
    """One line per sample of the run that ``run_key`` starts: what `show RUN SAMPLE` takes."""
    from rich.table import Table

    with store.reader() as con:
        found = con.execute("SELECT run_key, method, benchmark, split FROM runs WHERE starts_with(run_key, ?) "
                            "ORDER BY run_key LIMIT 6", [run_key]).fetchall()
        if len(found) != 1:
            keys = ", ".join(f[0][:8] for f in found[:5]) or "none"
            raise UserError(f"show {run_key}: expected one run, found {keys} (see `interlat-bench runs`)")
        key, method, bench, split = found[0]
        rows = con.execute("SELECT sample_id, success, score, steps, error FROM samples WHERE run_key = ? "
                           "ORDER BY sample_id", [key]).fetchall()
    table = Table(title=f"{method} | {bench}/{split} | run {key}: {len(rows)} samples "
                        f"(`interlat-bench show {key[:8]} SAMPLE` prints one)", title_justify="left")
    for column in ("sample", "success", "score", "steps", "error"):
        table.add_column(column)
    for sid, success, score, steps, error in rows:
        table.add_row(sid, "-" if success is None else str(bool(success)), "-" if score is None else f"{score:g}",
                      "-" if steps is None else str(steps), error or "")
    console.print(table)


@app.command()
def report(
    out: Path | None = typer.Option(None, "--out", "-o", help="Folder to write into (default: report/ beside "
                                    "the database)."),
    html: bool = typer.Option(False, "--html", help="Also write one self-contained report.html."),
    baseline: str | None = typer.Option(None, help="The method every row is compared with (paired tests; "
                                        "default latent)."),
    db: Path | None = DbOpt,
):
    """Tables in the paper's layouts (ALFWorld, MATH, probe, ablations), paired significance,
    latency and the efficiency plot: Markdown, CSV, LaTeX, JSON and optionally HTML."""
    with user_errors():
        from interlat_bench.results import report as rp

        _known_in_db(_existing_db(db), "method", [baseline] if baseline else [], "--baseline")
        baseline = baseline or "latent"
        folder = out or _db(db).parent / "report"
        if folder.exists() and not folder.is_dir():
            raise UserError(f"--out {folder}: a file stands there; the report is a folder of tables")
        written = rp.write(_db(db), folder, baseline=baseline, marks=_diagnostic_marks(), html=html)
        tables = sorted(n.removesuffix(".csv") for n in written if n.endswith(".csv"))
        console.print(f"report: {', '.join(tables) or 'no tables (no results yet)'} -> {folder}")
        if "report.html" in written:
            console.print(f"open {written['report.html']}")


@app.command()
def sql(
    query: str = typer.Argument(..., help="A read-only SQL statement."),
    format: str = typer.Option("rich", "--format", "-f", help="rich, csv or json."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file (atomically) instead."),
    db: Path | None = DbOpt,
):
    """Run a query on a read-only connection to the results database."""
    with user_errors():
        import csv
        import io
        import json

        from rich.table import Table

        from interlat_bench.harness.core.atomic import write_text
        from interlat_bench.results.store import query_readonly

        _table_format(format, ("rich", "csv", "json"))
        if output is not None and output.is_dir():
            raise UserError(f"--output {output}: a folder stands there; give a file name")
        columns, rows = query_readonly(_existing_db(db), query)
        if format == "rich" and output is None:
            table = Table(*columns)
            for row in rows:
                table.add_row(*("NULL" if v is None else str(v) for v in row))
            console.print(table)
            return
        if format == "json":
            text = json.dumps([dict(zip(columns, row, strict=True)) for row in rows], indent=1, default=str) + "\n"
        else:
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerows([columns, *rows])
            text = buf.getvalue()
        if output is None:
            typer.echo(text, nl=False)
        else:
            write_text(output, text)
            console.print(f"{len(rows)} rows -> {output}")


@app.command()
def ingest(db: Path | None = DbOpt):
    """Load pending worker shards into the database (after an interrupted or locked run)."""
    with user_errors():
        from interlat_bench.results.shards import ingest as do_ingest
        from interlat_bench.results.store import Store

        check_writable(_db(db).parent, "results folder")
        counts = do_ingest(Store(_db(db)), _db(db).parent / "shards", warn=err.print)
        console.print(f"ingested {counts}")


def _one_spec(method: str, task: str, split: str | None, sender: str, receiver: str, dtype: str,
              param: list[str], limit: int | None = None):
    from interlat_bench.harness.grid import expand

    specs = expand(methods_csv=method, tasks_csv=task, splits_csv=split, sender=sender, receiver=receiver,
                   dtype=_concrete_dtype(dtype), limit=limit, method_params=_params(param))
    if len(specs) != 1:
        raise UserError("give exactly one --method, --task and --split")
    return specs[0]


@app.command()
def collect(
    task: str = typer.Option(..., "--task", "-t", help="Benchmark whose tasks the sender plans for."),
    split: str = typer.Option("train", help="Split (train = the receiver's training tasks)."),
    sender: str = typer.Option("smollm2-135m"),
    limit: int | None = typer.Option(None, min=1, help="First N tasks."),
    keep_rows: int | None = typer.Option(None, min=1, help="Compressed front end: keep the first K rows."),
    dtype: str = typer.Option("auto"),
    param: list[str] = typer.Option([], "--param", "-p", help="Sender setting key=value (plan_tokens, ...)."),
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
    log_file: Path | None = LogFileOpt,
):
    """Collect the sender's plans and latent messages (cached, resumable)."""
    with user_errors():
        from interlat_bench.harness import terminal

        terminal.setup(err, quiet=quiet, verbose=verbose, log_file=log_file)
        _check_cache()
        from interlat_bench.harness.core.registry import benchmarks
        from interlat_bench.methods.base import RunContext
        from interlat_bench.methods.sending import collect_plans

        spec = _one_spec("latent", task, None, sender, sender, dtype, param)
        bench = benchmarks.get(task)(dict(spec.benchmark_params))
        samples = bench.train_samples(limit) if split == "train" else bench.samples(split, limit)
        messages = collect_plans(RunContext(spec, bench, log=_note), samples, dict(spec.method_params),
                                 keep_rows=keep_rows)
        rows = [m.rows for m in messages.values()]
        console.print(f"{len(messages)} messages ({sum(rows) / max(len(rows), 1):.1f} rows on average) "
                      f"in collection {messages.key}")


@app.command()
def train(
    method: str = typer.Option("latent", "--method", "-m", help="latent, text or no_comm."),
    task: str = typer.Option(..., "--task", "-t"),
    sender: str = typer.Option("smollm2-135m"),
    receiver: str = typer.Option("smollm2-135m"),
    dtype: str = typer.Option("auto"),
    deepspeed: Path | None = typer.Option(None, help="DeepSpeed JSON (e.g. trainers/zero2.json)."),
    param: list[str] = typer.Option([], "--param", "-p", help="preset=quick|cpu|paper, n_train=N, curriculum=..."),
    method_path: list[str] = MethodPathOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
    log_file: Path | None = LogFileOpt,
):
    """Train (or reuse) a receiver; prints its checkpoint folder with losses.csv and losses.png."""
    with user_errors():
        from interlat_bench.harness import terminal

        terminal.setup(err, quiet=quiet, verbose=verbose, log_file=log_file)
        _check_cache()
        _method_paths(method_path)
        from interlat_bench.harness.core.registry import benchmarks, methods
        from interlat_bench.harness.runner import train_stage
        from interlat_bench.methods.base import RunContext

        # Training reads the benchmark's train split whatever split is evaluated: any one names the cell.
        spec = _one_spec(method, task, benchmarks.get(task).default_splits[0], sender, receiver, dtype, param)
        _check_models([spec])
        impl = methods.get(method)(dict(spec.method_params))
        if impl.trained_with is None:
            raise UserError(f"method {method!r} has no trained receiver")
        bench = benchmarks.get(task)(dict(spec.benchmark_params))
        folder = train_stage(RunContext(spec, bench, log=_note), impl,
                             deepspeed=str(deepspeed) if deepspeed else None)
        from interlat_bench.harness.core.settings import process_rank

        if process_rank() == 0:  # under torchrun, the first process answers
            console.print(f"receiver checkpoint: {folder}")


# --help goes to lm-eval too: its options are this command's.
@app.command("lm-eval", context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                          "help_option_names": []})
def lm_eval_cmd(ctx: typer.Context):
    """lm-eval's own command line with the `interlat` model registered:
    `interlat-bench lm-eval --model interlat --model_args method=latent,task=math --tasks ...`
    (`interlat-bench lm-eval run --help`: its options)."""
    with user_errors():
        from interlat_bench.harness.lm_eval_model import main as lm_eval_main

        code = lm_eval_main(ctx.args)
    if code:
        raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        console.print(f"interlat-bench {version('interlat-bench')}")
        raise typer.Exit()


@app.callback()
def main_options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                              help="Print the version and exit.")):
    """Benchmark and ablation harness for agents that communicate in latent space."""


@app.command("ls")
def list_things(name: str | None = typer.Argument(None, help="A method or benchmark: its parameters."),
                method_path: list[str] = MethodPathOpt):
    """List methods, benchmarks and built-in models; `ls NAME` shows one method's or benchmark's
    parameters with their defaults and accepted values (all of them enter the run key)."""
    with user_errors():
        _method_paths(method_path)
        if name:
            _describe(name)
            return
        from rich.table import Table

        from interlat_bench.harness.core.models import BUILTIN_MODELS
        from interlat_bench.harness.core.registry import benchmarks, methods

        t = Table("method", "receiver trained with", "sender", "description", title="methods")
        for name, cls in methods.items():
            t.add_row(name, "-" if cls.trained_with is None else cls.trained_with.value,
                      "yes" if cls.needs_sender() else "-", cls.description)
        console.print(t)
        t = Table("benchmark", "splits (samples)", "default", title="benchmarks")
        for name, cls in benchmarks.items():
            t.add_row(name, _split_sizes(cls), ", ".join(cls.default_splits))
        console.print(t)
        t = Table("model", "what", title="models (also: a local folder or a hub id)")
        for name, what in BUILTIN_MODELS.items():
            t.add_row(name, what)
        console.print(t)


def _split_sizes(cls) -> str:
    """'seen (140), unseen (134)': each split with its number of samples in the data found here."""
    try:
        bench = cls({})
        return ", ".join(f"{sp} ({len(bench.samples(sp, None))})" for sp in cls.splits)
    except UserError as exc:  # data not found: say so, the rest of `ls` still helps
        return f"{', '.join(cls.splits)} (data not found: {str(exc).split(': ', 1)[-1][:60]}...)"


def _describe(name: str) -> None:
    import json

    from rich.table import Table

    from interlat_bench.harness.core.registry import benchmarks, methods

    if name in methods.names():
        cls, what, kind = methods.get(name), "--param", "method"
        values = cls.defaults
    elif name in benchmarks.names():
        cls, what, kind = benchmarks.get(name), "--setting", "benchmark"
        values = cls.defaults
    else:
        methods.get(name)  # unknown: the registry's did-you-mean error
        return
    about = getattr(cls, "description", "") or next(iter((cls.__doc__ or "").strip().splitlines()), "")
    console.print(f"{kind} {name}" + (f": {about}" if about else ""))
    if kind == "benchmark":
        console.print(f"splits: {_split_sizes(cls)} (default {', '.join(cls.default_splits)})")
    t = Table(what, "default", "accepted", title=f"{name}: every value below is part of the run key")
    sweep = getattr(cls, "sweep", {}) or {}
    for key, default in sorted(values.items()):
        check = cls.param_checks.get(key)
        # Left unset, a swept parameter runs one configuration per value.
        shown = f"sweep {json.dumps(list(sweep[key]))}" if key in sweep else json.dumps(default)
        t.add_row(key, shown, check.expected if check else "-")
    console.print(t)


INTERRUPT_GRACE_S = 10.0  # what clean-up may take after Ctrl-C before the process ends regardless


def main() -> None:
    """The entry point. Ctrl-C anywhere ends in one line and exit status 130. The signal itself is
    noted: DuckDB turns it into RuntimeError('Query interrupted'), and Typer into a silent exit.
    Clean-up after it is given INTERRUPT_GRACE_S: DuckDB at times waits for its worker threads for
    ever once a query is interrupted (duckdb 2.0.1, about one time in five on `range(10**12)`), and
    nothing it holds needs it (files are written whole or not at all, ingest is one transaction)."""
    import os
    import signal
    import threading

    interrupted = []
    said = threading.Lock()  # the line is printed once, by whichever path gets there first

    def say_interrupted() -> None:
        if said.acquire(blocking=False):
            err.print(INTERRUPTED, highlight=False)
            sys.stderr.flush()

    def end_regardless() -> None:
        say_interrupted()
        os._exit(130)

    def on_ctrl_c(signum, frame):
        if not interrupted:
            watchdog = threading.Timer(INTERRUPT_GRACE_S, end_regardless)
            watchdog.daemon = True  # a prompt exit does not wait for it
            watchdog.start()
        interrupted.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        sys.exit(app())
    except BaseException as exc:
        if not interrupted and not isinstance(exc, KeyboardInterrupt):
            raise
    say_interrupted()
    sys.exit(130)


if __name__ == "__main__":  # python -m interlat_bench.harness.cli (where the script is not installed)
    main()
