"""What the results database holds, asked from Python: the queries behind `runs`, `show`, the
option checks and the lines printed after a run. Each opens a read-only connection.

    from interlat_bench.results import queries
    queries.runs("interlat-results/interlat.duckdb")  # one RunRow per run
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

# Built-in sample columns a table can aggregate (besides the keys of the metrics JSON).
BUILTIN_METRICS = ("success", "score", "steps", "steps_success")
RUN_STATUSES = ("running", "complete", "partial", "incomplete", "interrupted", "failed")
# Metrics keys that hold records rather than numbers: never a column of a table.
_NOT_METRICS = {"transcript", "traceback", "actions"}
# Run columns that `distinct` may list.
RUN_COLUMNS = ("method", "benchmark", "split", "sender_model", "receiver_model")

Db = str | os.PathLike[str]


def _reader(db: Db):
    from interlat_bench.results.store import Store  # DuckDB loads with the first query, not with `--help`

    return Store(db).reader()


def distinct(db: Db, column: str) -> list[str]:
    """The values a run column holds (method, benchmark, split, sender_model, receiver_model)."""
    if column not in RUN_COLUMNS:
        raise ValueError(f"column {column!r}: expected one of {', '.join(RUN_COLUMNS)}")
    with _reader(db) as con:
        return sorted({r[0] for r in con.execute(f"SELECT DISTINCT {column} FROM runs").fetchall() if r[0]})


def run_keys(db: Db) -> list[str]:
    with _reader(db) as con:
        return [r[0] for r in con.execute("SELECT run_key FROM runs ORDER BY run_key").fetchall()]


def metric_keys(db: Db) -> list[str]:
    """The keys some sample's metrics JSON holds (what a table's metric or `--by` may name)."""
    with _reader(db) as con:
        return sorted({k for (k,) in con.execute(
            "SELECT DISTINCT unnest(json_keys(metrics)) FROM samples WHERE metrics IS NOT NULL").fetchall()}
            - _NOT_METRICS)


def tags(db: Db) -> list[str]:
    with _reader(db) as con:
        return sorted({t for (t,) in con.execute("SELECT DISTINCT unnest(tags) FROM runs").fetchall()})


@dataclass(frozen=True)
class RunRow:
    run_key: str
    method: str
    where: str          # benchmark/split
    status: str
    samples: int
    errors: int
    started: str | None
    git: str
    seed: int
    tags: tuple[str, ...]


def runs(db: Db) -> list[RunRow]:
    """Every run, oldest first, with its number of samples and errors."""
    with _reader(db) as con:
        rows = con.execute("""
            SELECT r.run_key, r.method, r.benchmark || '/' || r.split, r.status,
                   count(s.sample_id), count(s.error), strftime(r.created_at, '%Y-%m-%d %H:%M'),
                   coalesce(left(r.git_sha, 8), '-'), r.seed, coalesce(r.tags, [])
            FROM runs AS r LEFT JOIN samples AS s USING (run_key)
            GROUP BY ALL ORDER BY 7, 1""").fetchall()
    return [RunRow(*r[:9], tuple(r[9])) for r in rows]


@dataclass(frozen=True)
class SampleRow:
    sample_id: str
    success: bool | None
    score: float | None
    steps: int | None
    error: str | None


@dataclass(frozen=True)
class RunHead:
    run_key: str
    method: str
    benchmark: str
    split: str
    sender_model: str | None = None
    receiver_model: str | None = None


def runs_starting(db: Db, prefix: str, at_most: int = 6) -> list[RunHead]:
    """The runs whose key starts with ``prefix`` (at most ``at_most`` of them)."""
    with _reader(db) as con:
        return [RunHead(*r) for r in con.execute(
            "SELECT run_key, method, benchmark, split, sender_model, receiver_model FROM runs WHERE starts_with(run_key, ?) "
            "ORDER BY run_key LIMIT ?", [prefix, at_most]).fetchall()]


def samples(db: Db, run_key: str) -> list[SampleRow]:
    """One run's samples, by id."""
    with _reader(db) as con:
        return [SampleRow(sid, None if ok is None else bool(ok), score, steps, error)
                for sid, ok, score, steps, error in con.execute(
                    "SELECT sample_id, success, score, steps, error FROM samples WHERE run_key = ? ORDER BY sample_id",
                    [run_key]).fetchall()]


@dataclass(frozen=True)
class Episode:
    run: RunHead
    sample: SampleRow
    metrics: dict[str, Any]


def episodes(db: Db, run_prefix: str, sample_part: str, at_most: int = 6) -> list[Episode]:
    """Samples whose id contains ``sample_part`` in runs whose key starts with ``run_prefix``; a
    sample whose id is exactly ``sample_part`` comes first."""
    with _reader(db) as con:
        hits = con.execute("""
            SELECT r.run_key, r.method, r.benchmark, r.split, r.sender_model, r.receiver_model, s.sample_id, s.success,
                   s.score, s.steps, s.error, CAST(s.metrics AS VARCHAR)
            FROM samples AS s JOIN runs AS r USING (run_key)
            WHERE starts_with(r.run_key, ?) AND contains(s.sample_id, ?)
            ORDER BY s.sample_id = ? DESC, r.run_key, s.sample_id LIMIT ?""",
                           [run_prefix, sample_part, sample_part, at_most]).fetchall()
    return [Episode(RunHead(*h[:6]), SampleRow(h[6], None if h[7] is None else bool(h[7]), *h[8:11]),
                    json.loads(h[11] or "{}")) for h in hits]


def counted_metric(db: Db, run_keys: list[str], key: str) -> dict[str, tuple[int, int | None]]:
    """run key -> (samples that record the 0/1 metric ``key``, how many of them are 1)."""
    if "'" in key:
        raise ValueError(f"metric key {key!r}")
    with _reader(db) as con:
        return {k: (n, None if hits is None else int(hits)) for k, n, hits in con.execute(
            f"SELECT run_key, count(metrics->>'{key}'), sum(try_cast(metrics->>'{key}' AS integer)) "
            "FROM samples WHERE list_contains(?, run_key) GROUP BY 1", [run_keys]).fetchall()}


def sample_counts(db: Db, run_keys: list[str]) -> dict[str, int]:
    with _reader(db) as con:
        return dict(con.execute("SELECT run_key, count(*) FROM samples WHERE list_contains(?, run_key) GROUP BY 1",
                                [run_keys]).fetchall())


def choose_runs(rows: list[RunRow], keys: list[str] | None, status: str | None, tags_: list[str]) -> list[RunRow]:
    """The runs named by key prefixes (each must match one run), then those with this status and
    one of these tags."""
    from interlat_bench.harness.core.errors import UserError

    if keys:
        chosen = []
        for k in keys:
            hits = [r for r in rows if r.run_key.startswith(k)]
            if len(hits) != 1:
                raise UserError(f"run key {k!r}: {'no run' if not hits else f'{len(hits)} runs'} match; "
                                "see `interlat-bench runs`")
            chosen += hits
        rows = chosen
    return [r for r in rows if (not status or r.status == status) and (not tags_ or set(tags_) & set(r.tags))]
