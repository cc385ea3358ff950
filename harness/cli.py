"""The `interlat-bench` command line: it wires options to the harness and prints what the views
render; it holds no logic of its own. Heavy imports (torch, transformers) happen inside
commands, so `--help` and `ls` stay fast."""

from __future__ import annotations

import functools
from pathlib import Path

import typer

from interlat_bench.harness import options
from interlat_bench.harness.boundary import console, err, user_errors
from interlat_bench.harness.core.errors import UserError
from interlat_bench.harness.core.params import key_values, split_csv
from interlat_bench.harness.core.params import tags as parse_tags
from interlat_bench.harness.core.settings import process_rank

app = typer.Typer(help="Benchmark and ablation harness for agents that communicate in latent space.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]})


def command(*args, **kwargs):
    """``app.command`` whose body ends any fault a user can cause in one line (``user_errors``)."""
    def register(fn):
        @functools.wraps(fn)
        def guarded(*a, **k):
            with user_errors():
                return fn(*a, **k)
        return app.command(*args, **kwargs)(guarded)
    return register


DbOpt = typer.Option(None, "--db", help="Results database (default: $INTERLAT_RESULTS/interlat.duckdb, else ./interlat-results/).")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress or notes on stderr; tables and errors still print.")
VerboseOpt = typer.Option(False, "--verbose", "-v", help="Also each sample's outcome and library warnings.")
LogFileOpt = typer.Option(None, "--log-file", help="Append progress, notes and warnings, with times, to this file.")
MethodPathOpt = typer.Option([], "--method-path", help="A method class to use without packaging it: "
                             "package.module:Class or path/to/file.py:Class (repeatable).")
BenchmarkPathOpt = typer.Option([], "--benchmark-path", help="A benchmark class to use without packaging it: "
                                "package.module:Class or path/to/file.py:Class (repeatable).")
ParamOpt = typer.Option([], "--param", "-p", help="Method parameter key=value (repeatable).")
SettingOpt = typer.Option([], "--setting", "-s",
                          help="Benchmark setting key=value, e.g. n_options=8 for probe (repeatable).")


def _progress_to_stderr(quiet: bool, verbose: bool, log_file: Path | None) -> None:
    from interlat_bench.harness import terminal

    terminal.setup(err, quiet=quiet, verbose=verbose, log_file=log_file)


@command()
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
    param: list[str] = ParamOpt,
    setting: list[str] = SettingOpt,
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
    shard: str | None = typer.Option(
        None, "--shard", help="I/N: compute the I-th of N fixed parts of every cell's samples (a job array's "
        "task, I from 0) and write shards only; `ingest` loads them when all N are done."),
    leaderboard_after: bool = typer.Option(True, "--leaderboard/--no-leaderboard"),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the cells and samples to compute; run nothing."),
    estimate: bool = typer.Option(False, "--estimate", help="A dry run with the predicted time of every stage "
                                  "on 1, 2, 4 and 8 devices, from the per-token costs bench/paper_scale.py "
                                  "stored for this device (or --costs)."),
    costs: Path | None = typer.Option(None, "--costs", help="For --estimate: a costs file bench/paper_scale.py "
                                      "stored on another device (its cache's costs/ folder)."),
    tag: list[str] = typer.Option([], "--tag", help="Label the runs (repeatable; not part of the run key): "
                                  "`leaderboard --tag` and `runs --tag` filter on it."),
    method_path: list[str] = MethodPathOpt,
    benchmark_path: list[str] = BenchmarkPathOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
    log_file: Path | None = LogFileOpt,
):
    """Expand the grid and run every cell; finished samples are skipped (resume)."""
    _progress_to_stderr(quiet, verbose, log_file)
    options.plugin_paths(method_path, benchmark_path)
    from interlat_bench.harness import grid as grids
    from interlat_bench.harness import runner, terminal, views

    given = dict(methods=methods, tasks=tasks, splits=splits, sender=sender, receiver=receiver, seeds=seeds,
                 limit=limit, max_steps=max_steps, max_new_tokens=max_new_tokens,
                 dtype=None if dtype == "auto" else dtype)
    chosen = grids.from_options(grid, given, params=key_values(param), settings=key_values(setting, "--setting"),
                                tag_values=tag, sample=sample, temperature=temperature, lookup_tokens=lookup_tokens)
    options.models(chosen.specs)
    part = options.shard(shard)
    path = options.db_path(db)
    if dry_run or estimate or costs:
        plans = runner.plan_grid(chosen.specs, path)
        views.dry_run(chosen.specs, plans)
        if estimate or costs:
            from interlat_bench.harness import estimate as estimates

            views.estimate(estimates.estimate(plans, estimates.stored_costs(costs)))
        return
    options.writable_results(path)
    options.writable_cache()
    results = runner.run_grid(chosen.specs, path, tags=tuple(chosen.tags), workers=workers, eval_batch=eval_batch,
                              episode_workers=episode_workers, episode_batch=episode_batch, shard=part,
                              **terminal.run_progress())
    if process_rank() != 0:  # under torchrun or accelerate, rank 0 speaks for all
        return
    views.run_summary(results, path, sharded=part is not None)
    if leaderboard_after and part is None:
        try:
            views.after_run(chosen.specs, path, note=chosen.note)
        except UserError as exc:  # e.g. another run holds the database: the results are safe
            err.print(f"leaderboard skipped: {exc}")


@command()
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
    from interlat_bench.harness import views
    from interlat_bench.results.leaderboard import Filters

    options.table_format(format)
    path = options.existing_db(db)
    chosen = {"method": methods, "benchmark": tasks, "split": splits, "sender_model": sender,
              "receiver_model": receiver}
    for (column, value), flag in zip(chosen.items(), ("--methods", "--tasks", "--splits", "--sender", "--receiver"),
                                     strict=True):
        options.known_in_db(path, column, split_csv(value), flag)
    options.known_metric(path, metric)
    options.known_by(path, by)
    tags = parse_tags(tag)
    options.known_tags(path, tags)
    options.known_run_keys(path, run_key)
    filters = Filters(tags=tags or None, run_keys=run_key or None, params=key_values(param) or None,
                      unfinished=unfinished)
    views.leaderboard(path, *(split_csv(v) or None for v in (methods, tasks, splits)), metric, format, by,
                      split_csv(sender) or None, split_csv(receiver) or None, filters)


@command()
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
    from interlat_bench.harness import views
    from interlat_bench.results import queries
    from interlat_bench.results.shards import ingest as load_shards
    from interlat_bench.results.shards import prune_runs, shards_dir
    from interlat_bench.results.store import Store

    options.table_format(format, ("rich", "md", "csv"))
    options.run_status(status)
    path = options.existing_db(db)
    load_shards(Store(path), shards_dir(path), warn=err.print)  # statuses as of now
    rows = queries.choose_runs(queries.runs(path), keys, status, parse_tags(tag))
    if prune:
        if not keys and not status and not tag:
            raise UserError("--prune: name the runs (keys), a --status or a --tag, e.g. --status interrupted")
        console.print(f"pruned {prune_runs(Store(path), shards_dir(path), [r.run_key for r in rows])} runs")
        return
    views.runs(path, rows, format)


@command()
def show(
    run_key: str = typer.Argument(..., help="A run key or a unique prefix (see `interlat-bench runs`)."),
    sample_id: str | None = typer.Argument(None, help="A sample id, or a unique part of one; without it, "
                                           "the run's samples are listed."),
    db: Path | None = DbOpt,
):
    """Print one episode: the sender's plan, every turn the receiver saw and wrote, the outcome.
    With a run key alone: the run's samples, one line each."""
    from interlat_bench.harness import views

    path = options.existing_db(db)
    if sample_id is None:
        views.samples(path, run_key)
    else:
        views.episode(path, run_key, sample_id)


@command()
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
    from interlat_bench.harness.views import diagnostic_marks
    from interlat_bench.results import report as rp

    path = options.existing_db(db)
    options.known_in_db(path, "method", [baseline] if baseline else [], "--baseline")
    folder = out or path.parent / "report"
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {folder}: a file stands there; the report is a folder of tables")
    written = rp.write(path, folder, baseline=baseline or "latent", marks=diagnostic_marks(), html=html)
    tables = sorted(n.removesuffix(".csv") for n in written if n.endswith(".csv"))
    console.print(f"report: {', '.join(tables) or 'no tables (no results yet)'} -> {folder}")
    if "report.html" in written:
        console.print(f"open {written['report.html']}")


@command()
def sql(
    query: str = typer.Argument(..., help="A read-only SQL statement."),
    format: str = typer.Option("rich", "--format", "-f", help="rich, csv or json."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file (atomically) instead."),
    db: Path | None = DbOpt,
):
    """Run a query on a read-only connection to the results database."""
    from interlat_bench.harness import views
    from interlat_bench.harness.core.atomic import write_text
    from interlat_bench.results import render
    from interlat_bench.results.store import query_readonly

    options.table_format(format, ("rich", "csv", "json"))
    if output is not None and output.is_dir():
        raise UserError(f"--output {output}: a folder stands there; give a file name")
    columns, rows = query_readonly(options.existing_db(db), query)
    if output is None:
        views.table(columns, rows, format)
        return
    write_text(output, render.text(columns, rows, "csv" if format == "rich" else format))
    console.print(f"{len(rows)} rows -> {output}")


@command()
def ingest(db: Path | None = DbOpt):
    """Load pending worker shards into the database (after an interrupted or locked run)."""
    from interlat_bench.results.shards import ingest as load_shards
    from interlat_bench.results.shards import shards_dir
    from interlat_bench.results.store import Store

    path = options.db_path(db)
    options.writable_results(path)
    console.print(f"ingested {load_shards(Store(path), shards_dir(path), warn=err.print)}")


@command()
def collect(
    task: str = typer.Option(..., "--task", "-t", help="Benchmark whose tasks the sender plans for."),
    split: str = typer.Option("train", help="Split (train = the receiver's training tasks)."),
    sender: str = typer.Option("smollm2-135m"),
    limit: int | None = typer.Option(None, min=1, help="First N tasks."),
    keep_rows: int | None = typer.Option(None, min=1, help="Compressed front end: keep the first K rows."),
    dtype: str = typer.Option("auto"),
    param: list[str] = typer.Option([], "--param", "-p", help="Sender setting key=value (plan_tokens, ...)."),
    setting: list[str] = SettingOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
    log_file: Path | None = LogFileOpt,
):
    """Collect the sender's plans and latent messages (cached, resumable)."""
    _progress_to_stderr(quiet, verbose, log_file)
    options.writable_cache()
    from interlat_bench.harness import runner

    messages = runner.collect_split(task, split, sender_model=sender, dtype=dtype, params=key_values(param), limit=limit,
                                    keep_rows=keep_rows, settings=key_values(setting, "--setting"))
    rows = [m.rows for m in messages.values()]
    console.print(f"{len(messages)} messages ({sum(rows) / max(len(rows), 1):.1f} rows on average) "
                  f"in collection {messages.key}")


@command()
def train(
    method: str = typer.Option("latent", "--method", "-m", help="latent, text or no_comm."),
    task: str = typer.Option(..., "--task", "-t"),
    sender: str = typer.Option("smollm2-135m"),
    receiver: str = typer.Option("smollm2-135m"),
    dtype: str = typer.Option("auto"),
    deepspeed: Path | None = typer.Option(None, help="DeepSpeed JSON (e.g. trainers/zero2.json)."),
    param: list[str] = typer.Option([], "--param", "-p", help="preset=quick|cpu|paper, n_train=N, curriculum=..."),
    setting: list[str] = SettingOpt,
    method_path: list[str] = MethodPathOpt,
    benchmark_path: list[str] = BenchmarkPathOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
    log_file: Path | None = LogFileOpt,
):
    """Train (or reuse) a receiver; prints its checkpoint folder with losses.csv and losses.png."""
    _progress_to_stderr(quiet, verbose, log_file)
    options.writable_cache()
    options.plugin_paths(method_path, benchmark_path)
    from interlat_bench.harness import runner, terminal
    from interlat_bench.harness.core.settings import process_rank

    spec = runner.one_spec(method, task, sender_model=sender, receiver_model=receiver, dtype=dtype, params=key_values(param),
                           settings=key_values(setting, "--setting"))
    options.models([spec])
    folder = runner.train(spec, deepspeed=str(deepspeed) if deepspeed else None, log=terminal.log.info)
    if process_rank() == 0:  # under torchrun, the first process answers
        console.print(f"receiver checkpoint: {folder}")


# --help goes to lm-eval too: its options are this command's.
@command("lm-eval", context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                      "help_option_names": []})
def lm_eval_cmd(ctx: typer.Context):
    """lm-eval's own command line with the `interlat` model registered:
    `interlat-bench lm-eval --model interlat --model_args method=latent,task=math --tasks ...`
    (`interlat-bench lm-eval run --help`: its options)."""
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


@command("ls")
def list_things(name: str | None = typer.Argument(None, help="A method or benchmark: its parameters."),
                method_path: list[str] = MethodPathOpt, benchmark_path: list[str] = BenchmarkPathOpt):
    """List methods, benchmarks and built-in models; `ls NAME` shows one method's or benchmark's
    parameters with their defaults and accepted values (all of them enter the run key)."""
    options.plugin_paths(method_path, benchmark_path)
    from interlat_bench.harness import views

    views.describe(name) if name else views.catalog()
