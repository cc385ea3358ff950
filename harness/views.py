"""What the commands print: tables on stdout (rich on a terminal, whole cells off one; md, csv
or json as asked), rendered by ``results.render`` and the leaderboard's renderers. Each view
takes what the results query API (``results.queries``, ``results.leaderboard``) returns."""

from __future__ import annotations

from itertools import groupby
from pathlib import Path

from rich.text import Text

from interlat_bench.harness.boundary import console, echo
from interlat_bench.harness.core.errors import UserError
from interlat_bench.harness.core.registry import benchmarks
from interlat_bench.results import queries, render


def diagnostic_marks() -> dict:
    """Benchmark settings that make a row a diagnostic (named in every label that has them)."""
    return {k: v for _, cls in benchmarks.items() for k, v in cls.diagnostics.items()}


def table(header: list[str], rows: list[list], fmt: str, title: str | None = None) -> None:
    if fmt == "rich":
        console.print(render.rich_table(header, rows, title))
    else:
        echo(render.text(header, rows, fmt))


def leaderboard(db, methods, benchmarks_, splits, metric, fmt, by: str | None = None,
                senders=None, receivers=None, filters=None) -> None:
    from interlat_bench.results import leaderboard as lb

    board = lb.leaderboard(db, methods=methods, benchmarks=benchmarks_, splits=splits, metric=metric,
                           marks=diagnostic_marks(), by=by, senders=senders, receivers=receivers, filters=filters)
    if not board.rows and fmt == "rich":  # say why rather than print an empty frame
        why = "no successful episode yet" if metric == "steps_success" else "no recorded values"
        left_out = [n for n in board.title.split("; ") if n.endswith("left out") and "unfinished" in n]
        console.print(f"{metric}: {why}" + (f" ({left_out[0]}: `runs` lists them, --unfinished reads them)"
                                            if left_out else ""))
        return
    if fmt == "rich":
        console.print(lb.render_rich(board))
    else:
        echo({"md": lb.render_markdown, "csv": lb.render_csv, "json": lambda t: lb.render_json(t) + "\n"}[fmt](board))


def after_run(specs, db: Path, note: str | None = None) -> None:
    """The grid's success table, chance levels, each benchmark's own tables, the comparison
    with no communication, and the grid file's note."""
    methods, names = sorted({s.method for s in specs}), sorted({s.benchmark for s in specs})
    leaderboard(db, methods, names, None, "success", "rich")
    chance(specs)
    for name in names:
        for metric in benchmarks.get(name).after_run_metrics:
            leaderboard(db, methods, [name], None, metric, "rich")
    against_no_comm(specs, db)
    if note:  # the grid file's own words on what its table shows
        console.print(note.strip(), highlight=False)


def against_no_comm(specs, db: Path) -> None:
    """Where a run has a no_comm run beside it (same benchmark, settings, split and seed): is its
    success rate above no communication beyond both 95% intervals? That is what tells a channel
    that carries something from one that does not."""
    from interlat_bench.results.leaderboard import versus

    def cell(spec):
        return spec.benchmark, spec.split, repr(spec.benchmark_params), spec.seed

    said = {"above": "above no_comm beyond both intervals", "below": "below no_comm beyond both intervals",
            "within": "not told apart from no_comm (intervals overlap)"}
    for (bench, split, _, seed), group in groupby(sorted(specs, key=cell), key=cell):
        runs = {s.method: s.run_key for s in group if s.receiver_model is not None}
        if "no_comm" not in runs or len(runs) < 2:
            continue
        for v in versus(db, runs, "no_comm"):
            console.print(f"{bench}/{split} seed {seed}: {v.label} {_rate(v.k, v.n, v.interval)} vs no_comm "
                          f"{_rate(v.reference_k, v.reference_n, v.reference_interval)}: {said[v.verdict]}",
                          highlight=False)


def _rate(k: int, n: int, interval: tuple[float, float]) -> str:
    return f"{100 * k / max(n, 1):.1f}% [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}] n={n}"


def chance(specs) -> None:
    """The chance level of each benchmark configuration that has one (e.g. the probe)."""
    done = set()
    for spec in specs:
        bench = benchmarks.get(spec.benchmark)(dict(spec.benchmark_params))
        if bench.chance is not None and (spec.benchmark, spec.benchmark_params) not in done:
            done.add((spec.benchmark, spec.benchmark_params))
            console.print(f"{spec.benchmark}: chance {100 * bench.chance:.1f}% ({bench.chance_note()})",
                          highlight=False)


def run_rates(db: Path, specs) -> None:
    """Per run: replies cut by the token cap, and the benchmark's own rates."""
    if not specs or not db.exists():
        return
    keys = [s.run_key for s in specs]
    counts, cut = queries.sample_counts(db, keys), queries.counted_metric(db, keys, "truncated")
    rates: dict[str, dict] = {}
    for spec in specs:
        where = f"{spec.method} | {spec.benchmark}/{spec.split}"
        n, hits = counts.get(spec.run_key, 0), cut.get(spec.run_key, (0, None))[1]
        if n and hits is not None:
            console.print(f"  replies cut at {spec.decoding.max_new_tokens} tokens: {hits}/{n} samples "
                          f"({100 * hits / n:.0f}%) | {where}", highlight=False)
        for key, label in benchmarks.get(spec.benchmark).after_run_rates.items():
            if key not in rates:  # one query per metric for every run
                rates[key] = queries.counted_metric(db, keys, key)
            n, hits = rates[key].get(spec.run_key, (0, None))
            if n and hits is not None:
                console.print(f"  {label}: {hits}/{n} ({100 * hits / n:.0f}%) | {where}", highlight=False)


def run_summary(results, db: Path, sharded: bool = False) -> None:
    """What a run computed; and, once it is in the database (not for a shard), its rates."""
    from interlat_bench.results.shards import shards_dir

    console.print(f"{len(results)} runs, {sum(r.computed for r in results)} samples computed, "
                  f"{sum(r.errors for r in results)} errors; results in {shards_dir(db) if sharded else db}")
    if not sharded:
        run_rates(db, [r.spec for r in results if r.spec.receiver_model is not None])


def dry_run(specs, plans) -> None:
    """The grid's cells with their swept parameters, samples to compute and what trains them."""
    from interlat_bench.harness.grid import swept_params

    swept = swept_params(specs)
    rows = [[c.spec.method, ", ".join(f"{k}={v}" for k, v in c.spec.method_params if k in swept),
             f"{c.spec.benchmark}/{c.spec.split}", c.spec.seed, c.total, c.done, c.total - c.done, c.trains,
             c.spec.run_key] for c in plans]
    table(["method", "params", "benchmark/split", "seed", "samples", "done", "to compute", "receiver trained with",
           "run key"], rows, "rich", f"dry run: {len(specs)} cells, nothing run")
    console.print(f"{sum(c.total - c.done for c in plans)} samples to compute in {len(specs)} cells")


def runs(db: Path, rows: list[queries.RunRow], fmt: str) -> None:
    from interlat_bench.results.leaderboard import run_rows

    labels = dict(run_rows(db, marks=diagnostic_marks(), timing_only=True).itertuples(index=False, name=None))
    header = ["run key", "configuration", "benchmark/split", "seed", "status", "samples", "errors", "started",
              "git", "tags"]
    table(header, [[r.run_key, labels.get(r.run_key, r.method), r.where, str(r.seed), r.status, str(r.samples),
                    str(r.errors), r.started or "-", r.git, ",".join(r.tags)] for r in rows],
          fmt, f"{len(rows)} runs in {db}")


def samples(db: Path, run_prefix: str) -> None:
    """One line per sample of the run that ``run_prefix`` starts: what `show RUN SAMPLE` takes."""
    found = queries.runs_starting(db, run_prefix)
    if len(found) != 1:
        keys = ", ".join(f.run_key[:8] for f in found[:5]) or "none"
        raise UserError(f"show {run_prefix}: expected one run, found {keys} (see `interlat-bench runs`)")
    run = found[0]
    rows = queries.samples(db, run.run_key)
    table(["sample", "success", "score", "steps", "error"],
          [[s.sample_id, "-" if s.success is None else str(s.success), "-" if s.score is None else f"{s.score:g}",
            "-" if s.steps is None else str(s.steps), s.error or ""] for s in rows], "rich",
          f"{run.method} | {run.benchmark}/{run.split} | run {run.run_key}: {len(rows)} samples "
          f"(`interlat-bench show {run.run_key[:8]} SAMPLE` prints one)")


TURN_STYLES = {"plan": "magenta", "user": "cyan", "assistant": "green", "note": "dim"}


def episode(db: Path, run_prefix: str, sample_part: str) -> None:
    """One episode: the sender's plan, every turn the receiver saw and wrote, the outcome."""
    import json

    hits = queries.episodes(db, run_prefix, sample_part)
    exact = [h for h in hits if h.sample.sample_id == sample_part]
    hits = exact[:1] if len(exact) == 1 else hits
    if len(hits) != 1:
        found = ", ".join(f"{h.run.run_key[:8]}/{h.sample.sample_id}" for h in hits[:5]) or "none"
        raise UserError(f"show {run_prefix} {sample_part}: expected one sample, found {found} "
                        "(see `interlat-bench runs` and `interlat-bench sql`)")
    run, s, metrics = hits[0].run, hits[0].sample, hits[0].metrics
    outcome = f"error: {s.error}" if s.error else f"success {bool(s.success)}, score {s.score}, steps {s.steps}"
    console.print(Text(f"{run.method} | {run.benchmark}/{run.split} | {run.sender_model or '-'} -> {run.receiver_model or '-'} "
                       f"| run {run.run_key}\nsample {s.sample_id}: {outcome}", style="bold"))
    turns = metrics.get("transcript")
    if not turns:
        console.print("no transcript stored for this sample (a reference policy, or a run recorded before "
                      "transcripts); its actions: " + json.dumps(metrics.get("actions", [])))
        return
    for turn in turns:
        console.print(Text(f"[{turn['role']}]", style=f"bold {TURN_STYLES.get(turn['role'], '')}"))
        console.print(Text(turn["content"]))


def catalog() -> None:
    """Methods, benchmarks and built-in models."""
    from interlat_bench.harness.core.models import BUILTIN_MODELS
    from interlat_bench.harness.core.registry import methods

    table(["method", "receiver trained with", "sender", "description"],
          [[name, "-" if cls.trained_with is None else cls.trained_with.value, "yes" if cls.needs_sender() else "-",
            cls.description] for name, cls in methods.items()], "rich", "methods")
    table(["benchmark", "splits (samples)", "default"],
          [[name, _split_sizes(cls), ", ".join(cls.default_splits)] for name, cls in benchmarks.items()], "rich",
          "benchmarks")
    table(["model", "what"], [list(item) for item in BUILTIN_MODELS.items()], "rich",
          "models (also: a local folder or a hub id)")


def _split_sizes(cls) -> str:
    """'seen (140), unseen (134)': each split with its number of samples in the data found here."""
    try:
        bench = cls({})
        return ", ".join(f"{sp} ({len(bench.samples(sp, None))})" for sp in cls.splits)
    except UserError as exc:  # data not found: say so, the rest of `ls` still helps
        return f"{', '.join(cls.splits)} (data not found: {str(exc).split(': ', 1)[-1][:60]}...)"


def describe(name: str) -> None:
    """One method's or benchmark's parameters with their defaults and accepted values."""
    import json

    from interlat_bench.harness.core.registry import methods

    if name in methods.names():
        cls, flag, kind = methods.get(name), "--param", "method"
    elif name in benchmarks.names():
        cls, flag, kind = benchmarks.get(name), "--setting", "benchmark"
    else:
        methods.get(name)  # unknown: the registry's did-you-mean error
        return
    about = cls.description or next(iter((cls.__doc__ or "").strip().splitlines()), "")
    console.print(f"{kind} {name}" + (f": {about}" if about else ""), highlight=False)
    if kind == "benchmark":
        console.print(f"splits: {_split_sizes(cls)} (default {', '.join(cls.default_splits)})", highlight=False)
    sweep = cls.sweep if kind == "method" else {}
    # Left unset, a swept parameter runs one configuration per value.
    rows = [[key, f"sweep {json.dumps(list(sweep[key]))}" if key in sweep else json.dumps(default),
             cls.param_checks[key].expected if key in cls.param_checks else "-"]
            for key, default in sorted(cls.defaults.items())]
    table([flag, "default", "accepted"], rows, "rich", f"{name}: every value below is part of the run key")


def estimate(result) -> None:
    """The predicted seconds of every stage (``harness.estimate``), on 1, 2, 4 and 8 devices."""
    from interlat_bench.harness.estimate import DEVICES

    def hms(seconds: float) -> str:
        m, s = divmod(round(seconds), 60)
        h, m = divmod(m, 60)
        return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{seconds:.1f}s"

    costs = result.costs
    rows = [[s.cell, s.stage, s.work, *(hms(s.on(n)) for n in DEVICES), s.note] for s in result.stages]
    rows.append(["total", "", "", *(hms(result.total(n)) for n in DEVICES), ""])
    table(["cell", "stage", "work", *(f"{n} device{'s' * (n > 1)}" for n in DEVICES), ""], rows, "rich",
          f"estimate on {costs.device}")
    console.print(f"per-token costs measured {costs.measured} ({costs.parameters / 1e9:.3g}B parameters), scaled "
                  "to each model by its parameters; replies to their token cap and episodes to their step limit "
                  "(upper bounds); model loading and game engines not counted; stages in the cache cost nothing")
