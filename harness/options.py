"""Command-line option values, parsed and checked before any work: a bad one is one line
naming the flag and what was expected (a name the results do not hold comes with the closest
one and what there is)."""

from __future__ import annotations

import contextlib
import difflib
from pathlib import Path

from interlat_bench.harness.core.atomic import check_writable
from interlat_bench.harness.core.errors import UserError
from interlat_bench.results import queries
from interlat_bench.results.render import FORMATS


def table_format(fmt: str, allowed: tuple[str, ...] = FORMATS) -> str:
    if fmt not in allowed:
        raise UserError(f"--format {fmt!r}: expected {', '.join(allowed[:-1])} or {allowed[-1]}")
    return fmt


def db_path(db: Path | None) -> Path:
    """The results database file (``--db``, else the default); a folder there is refused."""
    from interlat_bench.harness.core.settings import default_db

    path, folder = db or default_db(), False
    with contextlib.suppress(OSError):  # an unreadable folder above it is for the command to report
        folder = path.is_dir()
    if folder:
        raise UserError(f"--db {path}: a folder stands where the results database file should be "
                        "(give the .duckdb file)")
    return path


def existing_db(db: Path | None) -> Path:
    """The results database to read, which must exist (readers never create one)."""
    path = db_path(db)
    if not path.exists():
        from interlat_bench.results.shards import shards_dir

        shards = shards_dir(path)
        if any(shards.glob("*/*.jsonl")):  # a run killed before its first ingest
            raise UserError(f"no results database at {path} yet, but finished samples wait in {shards}: "
                            "load them with `interlat-bench ingest`")
        raise UserError(f"no results database at {path}: run `interlat-bench run ...` first")
    return path


def writable_results(db: Path) -> None:
    check_writable(db.parent, "results folder")


def writable_cache() -> None:
    """A read-only cache found before any work: found midway, it failed a run that was
    complete (its status turned `failed`)."""
    from interlat_bench.harness.core.settings import CACHE_ENV, cache_dir

    check_writable(cache_dir(), "cache folder", f"choose another with ${CACHE_ENV}")


def refuse_unknown(flag: str, name: str, present: list[str], what: str, listed: str) -> None:
    """A name the results do not hold is a typo, not an empty table."""
    if name not in present:
        close = difflib.get_close_matches(name, present, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UserError(f"{flag} {name!r}: {what}{hint} ({listed}: {', '.join(present) or 'none yet'})")


def known_in_db(db: Path, column: str, wanted: list[str], flag: str) -> None:
    present = queries.distinct(db, column) if wanted else []
    for name in wanted:
        refuse_unknown(flag, name, present, f"no such {column} in {db}", "present")


def known_run_keys(db: Path, prefixes: list[str]) -> None:
    keys = queries.run_keys(db) if prefixes else []
    for prefix in prefixes:
        if not any(k.startswith(prefix) for k in keys):
            raise UserError(f"--run-key {prefix!r}: no run's key starts so (see `interlat-bench runs`)")


def known_metric(db: Path, metric: str, flag: str = "--metric") -> None:
    """A metric is a built-in one or a metrics key (its first part, for a dotted path)."""
    if metric in queries.BUILTIN_METRICS:
        return
    keys = queries.metric_keys(db)
    if metric.split(".")[0] not in keys:
        refuse_unknown(flag, metric, [*queries.BUILTIN_METRICS, *keys], f"no such metric in {db}", "known")


def known_by(db: Path, by: str | None) -> None:
    """--by names a metrics key; an unknown one would give a column of '-'."""
    if by is None:
        return
    keys = queries.metric_keys(db)
    if by.split(".")[0] not in keys:
        refuse_unknown("--by", by, keys, f"no such metrics key in {db}", "known")


def known_tags(db: Path, wanted: list[str]) -> None:
    present = queries.tags(db) if wanted else []
    for tag in wanted:
        refuse_unknown("--tag", tag, present, f"no run has this tag in {db}", "tags; `run --tag` sets them")


def run_status(status: str | None) -> None:
    if status is not None and status not in queries.RUN_STATUSES:
        raise UserError(f"--status {status!r}: expected one of {', '.join(queries.RUN_STATUSES)}")


def shard(value: str | None) -> tuple[int, int] | None:
    """``--shard I/N``: (i, n) with 0 <= i < n."""
    if value is None:
        return None
    i, slash, n = value.partition("/")
    if not (slash and i.isdigit() and n.isdigit() and 0 <= int(i) < int(n)):
        raise UserError(f"--shard {value!r}: expected I/N with 0 <= I < N, e.g. 0/4 "
                        "(a job array's task index and its number of tasks)")
    return int(i), int(n)


def plugin_paths(method_refs: list[str], benchmark_refs: list[str] = ()) -> None:
    """``--method-path`` and ``--benchmark-path``: classes used without packaging them (worker
    processes find them too)."""
    from interlat_bench.harness.core.registry import benchmarks, methods

    for ref in method_refs:
        methods.add_path(ref, "--method-path")
    for ref in benchmark_refs:
        benchmarks.add_path(ref, "--benchmark-path")


def models(specs) -> None:
    """Every model the grid uses can load here: checked before any model loads or any run row
    is written."""
    from interlat_bench.harness.core.models import check_ref

    for flag, refs in (("--receiver", {s.receiver_model for s in specs}), ("--sender", {s.sender_model for s in specs})):
        for ref in sorted(r for r in refs if r is not None):
            check_ref(ref, flag)
