"""Leaderboards: SQL aggregates over runs + samples, pivoted to configuration x benchmark/split.

Every cell carries the mean, n (distinct samples), the errored episodes and a 95% interval:
Wilson for success rates of single-seed cells, Student-t otherwise (over per-sample means
when seeds replay the same samples). See :func:`leaderboard` for the rules.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa
from rich.markup import escape
from rich.table import Table as RichTable
from rich.text import Text

from interlat_bench.harness.core.errors import UserError
from interlat_bench.results import render
from interlat_bench.results.store import Store

Z95 = 1.959963984540054

# Two-sided 95% Student-t quantiles t_{0.975, df} for df = 1..30.
_T975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)

COLUMN_METRICS = ("success", "score", "steps")
NON_NEGATIVE = ("steps", "steps_success")  # their intervals are clipped at 0
_METRIC_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
MISSING = ""


@dataclass(frozen=True)
class Cell:
    """One leaderboard entry: mean ``value`` over ``n`` distinct samples and its 95% interval.

    ``lo``/``hi`` are None when no interval exists (a t-interval with n < 2). ``errors``
    counts the errored episodes (sample x seed) of the cell's runs; ``seeds`` how many
    seeds were averaged per sample.
    """

    value: float
    n: int
    lo: float | None
    hi: float | None
    errors: int = 0
    seeds: int = 1


@dataclass
class Table:
    """A rendered-agnostic leaderboard.

    ``rows`` hold the row label (a str) followed by one entry per ``columns`` item: a
    Cell, or ``MISSING`` ("") where there is no data. ``percent`` renders values x100.
    """

    title: str
    row_header: str
    columns: list[str]
    rows: list[list[Cell | str]] = field(default_factory=list)
    percent: bool = False
    metric: str = "success"


def wilson(k: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes out of n trials; (0, 1) when n == 0."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    p = k / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Versus:
    """One run's success rate beside a reference run's (same benchmark and split), as counts and
    95% Wilson intervals; errors count as failures. ``verdict``: above / below the reference
    beyond both intervals (they do not overlap), or within (they overlap: no difference shown)."""

    label: str
    k: int
    n: int
    interval: tuple[float, float]
    reference_k: int
    reference_n: int
    reference_interval: tuple[float, float]

    @property
    def verdict(self) -> str:
        (lo, hi), (ref_lo, ref_hi) = self.interval, self.reference_interval
        return "above" if lo > ref_hi else "below" if hi < ref_lo else "within"


def versus(store_path: str | os.PathLike[str], runs: dict[str, str], reference: str) -> list[Versus]:
    """Each run of ``runs`` (label -> run key) against the run labelled ``reference``."""
    with Store(store_path).reader() as con:
        counts = dict((key, (int(k or 0), int(n))) for key, k, n in con.execute(
            "SELECT run_key, sum(CAST(coalesce(success, false) AS INTEGER)), count(*) FROM samples "
            "WHERE list_contains(?, run_key) GROUP BY 1", [list(runs.values())]).fetchall())
    ref_k, ref_n = counts.get(runs[reference], (0, 0))
    return [Versus(label, *counts.get(key, (0, 0)), wilson(*counts.get(key, (0, 0))), ref_k, ref_n,
                   wilson(ref_k, ref_n)) for label, key in runs.items() if label != reference]


def t975(df: int) -> float:
    """Two-sided 95% Student-t quantile (table up to 30 df, Cornish-Fisher expansion above)."""
    if df < 1:
        raise ValueError("df must be >= 1")
    if df <= len(_T975):
        return _T975[df - 1]
    z = Z95
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mean_interval(mean: float, sd: float | None, n: int) -> tuple[float | None, float | None]:
    """Student-t 95% interval for a mean; (None, None) when n < 2."""
    if n < 2 or sd is None or math.isnan(sd):
        return None, None
    half = t975(n - 1) * sd / math.sqrt(n)
    return mean - half, mean + half


# -- values ----------------------------------------------------------------------------------

# The step cap of a run, for errored episodes of the ``steps`` metric.
_CAP_SQL = "TRY_CAST(json_extract(r.spec, '$.benchmark_params.max_steps') AS DOUBLE)"


def _value_sql(metric: str) -> tuple[str, list[object]]:
    """SQL for one episode's value (NULL: left out); errored episodes count as failures."""
    if metric in ("success", "score"):  # an error is a failure: 0
        return f"CASE WHEN s.error IS NOT NULL THEN 0.0 ELSE CAST(s.{metric} AS DOUBLE) END", []
    if metric == "steps":  # over all episodes: an error counts at the step cap (left out without one)
        return f"CASE WHEN s.error IS NOT NULL THEN {_CAP_SQL} ELSE CAST(s.steps AS DOUBLE) END", []
    if metric == "steps_success":  # mean steps over successful episodes only; an error did not succeed
        return "CASE WHEN s.error IS NULL AND s.success THEN CAST(s.steps AS DOUBLE) END", []
    if not _METRIC_NAME.match(metric):
        raise UserError(f"unknown metric {metric!r}: use success, score, steps or a key of the metrics JSON")
    return "CASE WHEN s.error IS NULL THEN TRY_CAST(json_extract(s.metrics, ?) AS DOUBLE) END", [f"$.{metric}"]


_ERROR_NOTE = {
    "success": "errors count as failures",
    "score": "errors score 0",
    "steps": "errors count at the step cap",
}


def _order(found: set[str], wanted: Sequence[str] | None) -> list[str]:
    if wanted:
        return [w for w in wanted if w in found]
    return sorted(found)


# -- configurations --------------------------------------------------------------------------

# Spec fields that are not part of a configuration: the seed (averaged over), the sample
# limit (how far a run went), the column (benchmark, split) and the data fingerprint (it
# varies per split).
_NOT_IDENTITY = frozenset({"seed", "limit", "benchmark", "split", "data"})
_UNSET = object()  # a field a configuration does not have

_FieldPath = tuple[str, ...]


def _flatten(value: Any, prefix: _FieldPath = ()) -> dict[_FieldPath, Any]:
    """{("method_params", "curriculum"): "pure", ...}; empty dicts add nothing."""
    if isinstance(value, dict):
        out: dict[_FieldPath, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, (*prefix, str(k))))
        return out
    return {prefix: value}


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _flat_key(flat: dict[_FieldPath, Any]) -> str:
    return _canon(sorted([list(p), _canon(v)] for p, v in flat.items()))


def _identity(method: str, sender: str | None, receiver: str | None, spec_text: str | None):
    """(shared, per_benchmark) flattened identity of a run, from its spec JSON.

    ``per_benchmark`` holds the fields whose values depend on the benchmark (its
    ``benchmark_params`` and the reply length ``decoding.max_new_tokens``); ``shared`` the
    rest, unknown keys included. A run without a spec is known by method and models only.
    """
    spec = json.loads(spec_text) if spec_text else {}
    ident = {k: v for k, v in spec.items() if k not in _NOT_IDENTITY} if isinstance(spec, dict) else {}
    ident.update(method=method, receiver=receiver, sender=sender)
    training = ident.get("training")
    if isinstance(training, dict) and "seed" in training:  # the run's seed trains its receiver: seeds pool
        ident["training"] = {k: v for k, v in training.items() if k != "seed"}
    per: dict[str, Any] = {}
    if "benchmark_params" in ident:
        per["benchmark_params"] = ident.pop("benchmark_params")
    decoding = ident.get("decoding")
    if isinstance(decoding, dict) and "max_new_tokens" in decoding:
        decoding = dict(decoding)
        per["decoding"] = {"max_new_tokens": decoding.pop("max_new_tokens")}
        ident["decoding"] = decoding
    return _flatten(ident), _flatten(per)


@dataclass
class _Row:
    """One configuration: shared fields plus one per-benchmark variant for each benchmark."""

    method: str
    receiver: str | None
    sender: str | None
    shared: dict[_FieldPath, Any]
    per: dict[str, dict[_FieldPath, Any]]  # benchmark -> its per-benchmark fields
    label: str = ""
    sort: tuple = ()


def _configurations(runs: list[tuple]) -> tuple[list[_Row], list[tuple[str, int]]]:
    """Rows and the (run_key, row index) pairs that feed them.

    Runs are grouped by their shared identity. Per-benchmark fields are compared only within
    a benchmark: a group whose runs on one benchmark come in several variants (say max_steps
    20 and 50 on alfworld) makes one row per choice of a variant on every benchmark, so no
    cell pools unlike runs, and a run whose per-benchmark fields are the only ones on its
    benchmark joins every row of its group (those configurations do not differ there).
    """
    groups: dict[str, dict[str, Any]] = {}
    for run_key, method, benchmark, _split, sender, receiver, spec in runs:
        shared, per = _identity(method, sender, receiver, spec)
        group = groups.setdefault(
            _flat_key(shared),
            {"head": (method, receiver, sender, shared), "variants": {}, "runs": []},
        )
        variant = _flat_key(per)
        group["variants"].setdefault(benchmark, {})[variant] = per
        group["runs"].append((run_key, benchmark, variant))
    rows: list[_Row] = []
    feeds: list[tuple[str, int]] = []
    for _, group in sorted(groups.items()):
        method, receiver, sender, shared = group["head"]
        benches = sorted(group["variants"])
        for combo in itertools.product(*(sorted(group["variants"][b]) for b in benches)):
            chosen = dict(zip(benches, combo, strict=True))
            index = len(rows)
            rows.append(_Row(method, receiver, sender, shared,
                             {b: group["variants"][b][v] for b, v in chosen.items()}))
            feeds += [(run_key, index) for run_key, b, v in group["runs"] if chosen[b] == v]
    return rows, feeds


def _show(value: Any) -> str:
    if value is _UNSET:
        return "unset"
    return value if isinstance(value, str) else _canon(value)


def _sort_value(value: Any) -> tuple:
    if value is _UNSET:  # older specs first
        return (-1, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value))
    return (1, _show(value)) if isinstance(value, str) else (2, _show(value))


def _name_fields(keys: list[tuple]) -> dict[tuple, str]:
    """Short unique display names: ``curriculum``, else ``method_params.curriculum``;
    ``max_steps``, else ``alfworld.max_steps``, else ``alfworld.benchmark_params.max_steps``."""
    candidates = {}
    for key in keys:
        if key[0] == "shared":
            path = key[1]
            candidates[key] = [".".join(path[i:]) for i in range(len(path) - 1, -1, -1)]
        else:
            bench, path = key[1], key[2]
            candidates[key] = [path[-1], f"{bench}.{path[-1]}", ".".join((bench, *path))]
    level = dict.fromkeys(keys, 0)
    while True:
        names = {k: candidates[k][min(level[k], len(candidates[k]) - 1)] for k in keys}
        clash = [k for k in keys if list(names.values()).count(names[k]) > 1
                 and level[k] < len(candidates[k]) - 1]
        if not clash:
            return names
        for k in clash:
            level[k] += 1


def _label_rows(rows: list[_Row], varying: list[str], marks: dict[str, Any] | None = None) -> None:
    """Label each row ``method[field=value, ...]``, naming only the fields in which the
    configurations of its method differ (models in the label path are not repeated), and
    always a benchmark setting with a value in ``marks`` (diagnostic modes)."""
    in_path = {("receiver",)} if "receiver" in varying else set()
    in_path |= {("sender",)} if "sender" in varying else set()
    by_method: dict[str, list[_Row]] = {}
    for row in rows:
        by_method.setdefault(row.method, []).append(row)
    for group in by_method.values():
        values: dict[tuple, list[Any]] = {}
        shared_paths = sorted({p for r in group for p in r.shared} - {("method",)} - in_path)
        for path in shared_paths:
            values[("shared", path)] = [r.shared.get(path, _UNSET) for r in group]
        for bench in sorted({b for r in group for b in r.per}):
            having = [r for r in group if bench in r.per]
            for path in sorted({p for r in having for p in r.per[bench]}):
                values[("per", bench, path)] = [
                    r.per[bench].get(path, _UNSET) if bench in r.per else None for r in group
                ]
        differing = []
        for key, vals in values.items():
            present = vals if key[0] == "shared" else [v for r, v in zip(group, vals, strict=True)
                                                         if key[1] in r.per]
            if len({_canon(v) if v is not _UNSET else "\0unset" for v in present}) > 1:
                differing.append(key)
        differing.sort(key=lambda k: (0 if k[0] == "shared" and k[1][0] == "method_params" else
                                      1 if k[0] == "shared" else 2, k[1:]))
        marked = [k for k, vals in values.items() if k not in differing and k[0] == "per"
                  and any(marks and k[2][-1] in marks and _canon(v) == _canon(marks[k[2][-1]]) for v in vals)]
        differing += marked
        names = _name_fields(differing)
        for i, row in enumerate(group):
            shown = [(names[k], values[k][i]) for k in differing
                     if k[0] == "shared" or k[1] in row.per]
            row.label = row.method + (f"[{', '.join(f'{n}={_show(v)}' for n, v in shown)}]" if shown else "")
            row.sort = tuple(_sort_value(values[k][i]) if k[0] == "shared" or k[1] in row.per else (4, "")
                             for k in differing)


# -- the table -------------------------------------------------------------------------------


def _observations_sql(value_sql: str, rows_view: str, group_sql: str) -> str:
    """One line per episode: configuration row, column, breakdown group, seed, sample, value."""
    return f"""
            SELECT m.row_id, r.benchmark, r.split, {group_sql} AS grp, r.seed, s.sample_id,
                   s.error IS NOT NULL AS errored, {value_sql} AS v
            FROM samples AS s
            JOIN runs AS r ON r.run_key = s.run_key
            JOIN {rows_view} AS m ON m.run_key = r.run_key"""


def _group_sql(by: str | None) -> tuple[str, list[object]]:
    """SQL for an episode's breakdown group (``--by``): a metrics JSON key, '-' where absent."""
    if by is None:
        return "''", []
    if not _METRIC_NAME.match(by):
        raise UserError(f"--by {by!r}: expected a key of the metrics JSON such as level, subject or task_type")
    return "? || '=' || coalesce(json_extract_string(s.metrics, ?), '-')", [by, f"$.{by}"]


def _aggregate_sql(value_sql: str, rows_view: str, group_sql: str) -> str:
    return f"""
        WITH obs AS ({_observations_sql(value_sql, rows_view, group_sql)}
        ),
        per_sample AS (  -- seeds replay the same samples: one mean per sample
            SELECT row_id, benchmark, split, grp, sample_id, avg(v) AS v, count(v) AS k, max(v) - min(v) AS spread
            FROM obs GROUP BY row_id, benchmark, split, grp, sample_id HAVING count(v) > 0
        ),
        cells AS (  -- same: every seed gave every sample the same value (greedy, nothing drawn)
            SELECT row_id, benchmark, split, grp, count(*) AS n, avg(v) AS mean, sum(v) AS total,
                   stddev_samp(v) AS sd, max(k) AS k, max(spread) = 0 AS same, bool_and(v IN (0, 1)) AS binary
            FROM per_sample GROUP BY row_id, benchmark, split, grp
        ),
        extra AS (
            SELECT row_id, benchmark, split, grp, count(*) FILTER (WHERE errored) AS errors,
                   list(DISTINCT seed) FILTER (WHERE v IS NOT NULL AND seed IS NOT NULL) AS seeds
            FROM obs GROUP BY row_id, benchmark, split, grp
        )
        SELECT c.row_id, c.benchmark, c.split, c.grp, c.n, c.mean, c.total, c.sd, c.k, c.same, e.errors, e.seeds, c.binary
        FROM cells AS c JOIN extra AS e USING (row_id, benchmark, split, grp)
    """


def _seed_note(seeds: set[int], averaged: bool) -> str:
    listed = ",".join(str(s) for s in sorted(seeds))
    if averaged:
        return f"seeds {listed} averaged per sample"
    return "1 seed" if len(seeds) <= 1 else f"1 seed per sample (seeds {listed})"


def _column(benchmark: str, split: str, group: str) -> str:
    return f"{benchmark}/{split}" + (f"/{group}" if group else "")  # group: "level=Level 3"


def _natural(text: str) -> tuple:
    """Order 'Level 2' before 'Level 10'."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", text))


def row_name(row: _Row, varying: list[str]) -> str:
    """The row's label path: ``label / receiver / sender`` for the model columns that vary."""
    return " / ".join([row.label] + ["-" if (m := getattr(row, name)) is None else str(m) for name in varying])


def _row_order(rows: list[_Row], varying: list[str], methods: Sequence[str] | None, shown: set[int]) -> list[int]:
    method_order = _order({row.method for row in rows}, methods)
    return sorted((i for i in shown if rows[i].method in method_order),
                  key=lambda i: (method_order.index(rows[i].method), row_name(rows[i], varying).split(" / ")[1:],
                                 rows[i].sort, rows[i].label))


# Runs that have not finished: left out of tables (their samples are a biased subset: the
# first ones, or those that happened to finish) until the same command completes them.
UNFINISHED = ("running", "interrupted", "failed", "incomplete")


@dataclass(frozen=True)
class Filters:
    """Which runs a table reads. Lists match any of their values; ``run_keys`` are prefixes;
    ``params`` match method parameters or benchmark settings of the run spec by value;
    ``unfinished`` also reads runs whose status is in UNFINISHED; ``timing_only`` also reads runs
    on shape models (random weights: their times count, never their scores)."""

    methods: Sequence[str] | None = None
    benchmarks: Sequence[str] | None = None
    splits: Sequence[str] | None = None
    senders: Sequence[str] | None = None
    receivers: Sequence[str] | None = None
    tags: Sequence[str] | None = None
    run_keys: Sequence[str] | None = None
    params: dict[str, Any] | None = None
    unfinished: bool = False
    timing_only: bool = False

    def where(self) -> tuple[list[str], list[Any]]:
        where, args = [] if self.timing_only else ["NOT coalesce(r.timing_only, false)"], []
        for column, wanted in (("method", self.methods), ("benchmark", self.benchmarks), ("split", self.splits),
                               ("sender_model", self.senders), ("receiver_model", self.receivers)):
            if wanted:
                where.append(f"list_contains(?, r.{column})")
                args.append(list(wanted))
        if self.tags:
            where.append("list_has_any(coalesce(r.tags, []), ?::VARCHAR[])")
            args.append(list(self.tags))
        if self.run_keys:
            where.append("list_bool_or(list_transform(?::VARCHAR[], lambda k: starts_with(r.run_key, k)))")
            args.append(list(self.run_keys))
        return where, args

    def keeps_spec(self, spec_text: str | None) -> bool:
        if not self.params:
            return True
        spec = json.loads(spec_text or "{}")
        given = {**spec.get("benchmark_params", {}), **spec.get("method_params", {})}
        return all(k in given and _canon(given[k]) == _canon(v) for k, v in self.params.items())


def _merged(filters: Filters | None, **given) -> Filters:
    """``filters`` with the keyword filters that were given (not None) set."""
    return replace(filters or Filters(), **{k: v for k, v in given.items() if v is not None})


@contextlib.contextmanager
def _configuration_view(store_path, value_sql: str, value_params: list, marks, filters: Filters):
    """A reader connection with a view ``_leaderboard_rows`` (run_key -> configuration row),
    the runs, their labelled configurations, the model columns that vary among them, and the
    runs left out because they are unfinished."""
    where, params = filters.where()
    where.append(f"EXISTS (SELECT 1 FROM samples AS s WHERE s.run_key = r.run_key AND ({value_sql}) IS NOT NULL)")
    params += value_params
    runs_sql = f"""
        SELECT r.run_key, r.method, r.benchmark, r.split, r.sender_model, r.receiver_model, CAST(r.spec AS VARCHAR),
               coalesce(list_contains(?, r.status), false) AS unfinished
        FROM runs AS r WHERE {" AND ".join(where)} ORDER BY r.run_key
    """
    with Store(store_path).reader() as con:
        found = [r for r in con.execute(runs_sql, [list(UNFINISHED), *params]).fetchall() if filters.keeps_spec(r[6])]
        runs = [r[:7] for r in found if filters.unfinished or not r[7]]
        left_out = len(found) - len(runs)
        rows, feeds = _configurations(runs)
        # A column varies when runs use different models; runs without one (None) do not count.
        varying = [name for name in ("receiver", "sender")
                   if len({getattr(r, name) for r in rows if getattr(r, name) is not None}) > 1]
        _label_rows(rows, varying, marks)
        view = "_leaderboard_rows"
        con.register(view, pa.table({"run_key": pa.array([f[0] for f in feeds], pa.string()),
                                     "row_id": pa.array([f[1] for f in feeds], pa.int64())}))
        try:
            yield con, runs, rows, varying, view, left_out
        finally:
            con.unregister(view)


def observations(
    store_path: str | os.PathLike[str],
    *,
    methods: Sequence[str] | None = None,
    benchmarks: Sequence[str] | None = None,
    splits: Sequence[str] | None = None,
    metric: str = "success",
    marks: dict[str, Any] | None = None,
    by: str | None = None,
    filters: Filters | None = None,
):
    """The episodes behind ``leaderboard``'s cells, one per line (a pandas DataFrame): ``row``
    (the configuration, labelled as in the leaderboard), ``column``, ``sample_id``, ``seed``,
    ``value`` (errors counted as the leaderboard counts them), ``errored``. Paired tests
    join two rows on (column, sample_id, seed)."""
    import pandas as pd

    value_sql, value_params = _value_sql(metric)
    group_sql, group_params = _group_sql(by)
    filters = _merged(filters, methods=methods, benchmarks=benchmarks, splits=splits)
    with _configuration_view(store_path, value_sql, value_params, marks, filters) as (
            con, _runs, rows, varying, view, _left_out):
        records = con.execute(_observations_sql(value_sql, view, group_sql) + " ORDER BY 1, 2, 3, 4, 5, 6",
                              group_params + value_params).fetchall()
    ordered = _row_order(rows, varying, methods, {int(r[0]) for r in records})
    rank = {i: k for k, i in enumerate(ordered)}
    frame = pd.DataFrame.from_records(
        [(row_name(rows[int(i)], varying), rows[int(i)].method, _column(b, sp, g), sid, seed, v, bool(err))
         for i, b, sp, g, seed, sid, err, v in sorted(records, key=lambda r: rank[int(r[0])])
         if v is not None],
        columns=["row", "method", "column", "sample_id", "seed", "value", "errored"])
    return frame


def run_rows(store_path: str | os.PathLike[str], marks: dict[str, Any] | None = None, *, timing_only: bool = False):
    """Every run with samples and the configuration row it belongs to, labelled as in the
    leaderboard (a pandas DataFrame: run_key, row); ``timing_only``: shape-model runs too."""
    import pandas as pd

    with _configuration_view(store_path, "1.0", [], marks, Filters(unfinished=True, timing_only=timing_only)) as (
            con, _runs, rows, varying, view, _left_out):
        pairs = con.execute(f"SELECT run_key, row_id FROM {view}").fetchall()
    return pd.DataFrame([(k, row_name(rows[int(i)], varying)) for k, i in pairs], columns=["run_key", "row"])


def leaderboard(
    store_path: str | os.PathLike[str],
    *,
    methods: Sequence[str] | None = None,
    benchmarks: Sequence[str] | None = None,
    splits: Sequence[str] | None = None,
    metric: str = "success",
    marks: dict[str, Any] | None = None,
    by: str | None = None,
    senders: Sequence[str] | None = None,
    receivers: Sequence[str] | None = None,
    filters: Filters | None = None,
) -> Table:
    """Mean ``metric`` per configuration (row) and benchmark/split (column).

    ``marks``: benchmark settings whose value there is always named in the label (a
    diagnostic mode such as ALFWorld's ``action=rank``), whether or not it differs.
    ``by``: a metrics JSON key (``level``, ``subject``, ``task_type``, ...) that splits each
    column into one column per value (``math/test/level=Level 3``; ``-`` for episodes without it).

    Rows: one row is one configuration, the run identity (``runs.spec``) without the seed,
    the sample limit, the column (benchmark, split) and the data fingerprint; any other
    spec key, known or not, is part of it. Fields that depend on the benchmark
    (``benchmark_params``, ``decoding.max_new_tokens``) are compared within a benchmark
    only, so one configuration run on math and alfworld is one row, while runs on one
    benchmark that differ in any identity field are never one cell (see
    ``_configurations``). Where the configurations of a method differ, its labels name the
    differing fields (``latent[curriculum=pure]``); the receiver and sender join the label
    path when runs use several (model-less runs do not count).

    Seeds: ``n`` counts distinct samples. In a cell where each sample was played once (one
    seed), success gets the Wilson interval over the n samples. Where seeds replay samples,
    each sample's outcomes are averaged over its seeds first, then the mean and a Student-t
    interval are taken over the n per-sample means (clustered by sample; clipped to [0, 1]
    for success, and of zero width when every sample has the same mean). Other metrics get a Student-t interval
    over per-sample means, except a yes/no metric (every value 0 or 1) played once per sample, which gets the
    Wilson interval as success does. The
    title says how seeds were combined.

    Errors: an errored episode (``error`` not NULL) is a failure: success and score count
    it as 0, ``steps`` (mean over all episodes) at the run's step cap
    (``benchmark_params.max_steps``; left out when the spec has none), ``steps_success``
    and metrics JSON keys leave it out. ``Cell.errors`` counts errored episodes. Episodes
    whose metric is NULL are left out. ``metric`` is ``success`` (shown as a percentage),
    ``score``, ``steps``, ``steps_success`` or a numeric key of the ``metrics`` JSON (dots
    for nesting). Filters keep their given order in the layout.
    """
    value_sql, value_params = _value_sql(metric)
    group_sql, group_params = _group_sql(by)
    filters = _merged(filters, methods=methods, benchmarks=benchmarks, splits=splits, senders=senders,
                      receivers=receivers)
    with _configuration_view(store_path, value_sql, value_params, marks, filters) as (
            con, runs, rows, varying, view, left_out):
        records = con.execute(_aggregate_sql(value_sql, view, group_sql), group_params + value_params).fetchall()
    row_header = " / ".join(["method", *varying])
    percent = metric == "success"

    cells: dict[tuple[int, str], Cell] = {}
    seeds_seen: set[int] = set()
    averaged = single = False
    any_errors = False
    replays: set[int] = set()
    for row_id, benchmark, split, grp, n, mean, total, sd, k, same, errors, seeds, binary in records:
        n, mean, seeds = int(n), float(mean), sorted(seeds or [])
        seeds_seen.update(seeds)
        any_errors |= bool(errors)
        if int(k) > 1 and same:  # seeds replayed identical episodes: they are one observation each
            replays.update(seeds)
            k = 1
        if int(k) > 1:  # samples replayed: t-interval over per-sample means
            averaged = True
            lo, hi = mean_interval(mean, sd, n)
            if percent and lo is not None and hi is not None:
                lo, hi = max(0.0, lo), min(1.0, hi)
        else:
            single = True
            # A yes/no metric (every value 0 or 1, e.g. the probe's fidelity) is a proportion too.
            lo, hi = wilson(float(total), n) if percent or binary else mean_interval(mean, sd, n)
        if metric in NON_NEGATIVE and lo is not None:  # a step count below 0 cannot be
            lo = max(0.0, lo)
        cells[(int(row_id), _column(benchmark, split, grp))] = Cell(mean, n, lo, hi, int(errors),
                                                                    max(1, len(seeds)))

    benchmark_order = _order({str(r[2]) for r in runs}, benchmarks)
    split_order = _order({str(r[3]) for r in runs}, splits)
    groups = sorted({str(r[3]) for r in records}, key=_natural)
    present = {c for _, c in cells}
    columns = [c for b in benchmark_order for s in split_order for g in groups
               if (c := _column(b, s, g)) in present]
    ordered = _row_order(rows, varying, methods, {i for i, c in cells if c in columns})
    table_rows: list[list[Cell | str]] = [
        [row_name(rows[i], varying), *(cells.get((i, c), MISSING) for c in columns)] for i in ordered
    ]

    notes = [] if replays and not averaged else [_seed_note(seeds_seen, averaged)]
    if replays:
        notes.append(f"seeds {','.join(map(str, sorted(replays)))} gave identical outcomes on every sample of some "
                     "cells (as greedy decoding does where nothing is drawn at random): each sample counted once")
    if any_errors:
        notes.append(_ERROR_NOTE.get(metric, "errored episodes left out"))
    if by:
        notes.append(f"columns split by {by}")
    if left_out:
        notes.append(f"{left_out} unfinished run{'s' if left_out > 1 else ''} left out")
    if percent:
        ci = "Wilson" if not averaged else "Student-t" if not single else "Wilson (1 seed) / Student-t"
        title = f"success rate %: mean [95% {ci} CI] n samples; {'; '.join(notes)}"
    else:
        title = f"{metric}: mean [95% CI] n samples; {'; '.join(notes)}"
    return Table(title=title, row_header=row_header, columns=columns, rows=table_rows, percent=percent,
                 metric=metric)


# -- rendering -------------------------------------------------------------------------------


def _num(x: float, percent: bool) -> str:
    if percent:
        return f"{100 * x:.1f}"
    return f"{x:.1f}" if abs(x) >= 100 else f"{x:.2f}"


def _interval_n(cell: Cell, percent: bool) -> str:
    interval = (
        "" if cell.lo is None or cell.hi is None else f"[{_num(cell.lo, percent)}, {_num(cell.hi, percent)}] "
    )
    return f"{interval}n={cell.n}"


def _err(cell: Cell) -> str:
    return f"err={cell.errors}" if cell.errors else ""


def cell_parts(cell: Cell, percent: bool) -> tuple[str, str]:
    """("61.2", "[55.0, 67.1] n=140") for a cell; " err=3" is appended when episodes errored."""
    rest = _interval_n(cell, percent)
    return _num(cell.value, percent), f"{rest} {_err(cell)}" if cell.errors else rest


def format_cell(cell: Cell | str, percent: bool) -> str:
    """One-line text of a cell: "61.2 [55.0, 67.1] n=140 err=3"; "–" when missing."""
    if not isinstance(cell, Cell):
        return cell or "–"
    value, rest = cell_parts(cell, percent)
    return f"{value} {rest}"


def render_rich(table: Table) -> RichTable:
    """A rich table: bold mean, dim interval and n, errors in red. Labels are text, not markup
    (``latent[curriculum=pure]`` keeps its brackets)."""
    out = RichTable(title=Text(table.title))
    out.add_column(escape(table.row_header), style="bold")
    for column in table.columns:
        out.add_column(escape(column), justify="right")
    for row in table.rows:
        label, *cells = row
        rendered: list[Text | str] = [Text(str(label))]
        for cell in cells:
            if isinstance(cell, Cell):
                text = Text(_num(cell.value, table.percent), style="bold")
                text.append(" " + _interval_n(cell, table.percent), style="dim")
                if cell.errors:
                    text.append(" " + _err(cell), style="red")
                rendered.append(text)
            else:
                rendered.append(Text(cell or "–", style="dim"))
        out.add_row(*rendered)
    return out


def render_markdown(table: Table) -> str:
    """A GitHub-flavoured Markdown table, preceded by the title in bold."""
    rows = [[str(label), *(format_cell(c, table.percent) for c in cells)] for label, *cells in table.rows]
    return render.markdown([table.row_header, *table.columns], rows, table.title or None,
                           ["---"] + ["---:"] * len(table.columns))


def render_csv(table: Table) -> str:
    """Tidy CSV: one line per non-missing cell (row label, column, metric, value, n, lo, hi,
    errors).

    Values are raw (success as a fraction in [0, 1], not a percentage) with 6 significant
    digits; lo/hi are empty when there is no interval; ``errors`` counts errored episodes.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([table.row_header, "column", "metric", "value", "n", "lo", "hi", "errors"])
    for record in _records(table):
        writer.writerow([record[table.row_header], record["column"], record["metric"], *(
            "" if record[k] is None else f"{record[k]:.6g}" for k in ("value", "n", "lo", "hi")), record["errors"]])
    return buf.getvalue()


def _records(table: Table) -> list[dict[str, Any]]:
    """One dict per non-missing cell: row label, column, metric, value, n, lo, hi, errors
    (values raw: success as a fraction)."""
    return [{table.row_header: label, "column": column, "metric": table.metric, "value": cell.value, "n": cell.n,
             "lo": cell.lo, "hi": cell.hi, "errors": cell.errors}
            for label, *cells in table.rows for column, cell in zip(table.columns, cells, strict=True)
            if isinstance(cell, Cell)]


def render_json(table: Table) -> str:
    """The table for tools: title, metric, row header, columns and one record per cell."""
    return json.dumps({"title": table.title, "metric": table.metric, "row_header": table.row_header,
                       "columns": table.columns, "cells": _records(table)}, indent=1)
