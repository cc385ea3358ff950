"""Leaderboards: SQL aggregates over runs + samples, pivoted to method x benchmark/split.

Every cell carries the mean, n and a 95% interval: Wilson for success rates, Student-t
for other metrics (steps, score, numeric keys of the ``metrics`` JSON).
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from rich.table import Table as RichTable
from rich.text import Text

from interlat_bench.harness.errors import UserError
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
_METRIC_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
MISSING = ""


@dataclass(frozen=True)
class Cell:
    """One leaderboard entry: mean ``value`` over ``n`` samples and its 95% interval.

    ``lo``/``hi`` are None when no interval exists (a t-interval with n < 2).
    """

    value: float
    n: int
    lo: float | None
    hi: float | None


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


def _value_sql(metric: str) -> tuple[str, list[object]]:
    if metric == "success":
        return "CAST(s.success AS DOUBLE)", []
    if metric == "steps_success":  # mean steps over successful episodes only
        return "CASE WHEN s.success THEN CAST(s.steps AS DOUBLE) END", []
    if metric in COLUMN_METRICS:
        return f"CAST(s.{metric} AS DOUBLE)", []
    if not _METRIC_NAME.match(metric):
        raise UserError(f"unknown metric {metric!r}: use success, score, steps or a key of the metrics JSON")
    return "TRY_CAST(json_extract(s.metrics, ?) AS DOUBLE)", [f"$.{metric}"]


def _order(found: set[str], wanted: Sequence[str] | None) -> list[str]:
    if wanted:
        return [w for w in wanted if w in found]
    return sorted(found)


def leaderboard(
    store_path: str | os.PathLike[str],
    *,
    methods: Sequence[str] | None = None,
    benchmarks: Sequence[str] | None = None,
    splits: Sequence[str] | None = None,
    metric: str = "success",
) -> Table:
    """Mean ``metric`` per method (x receiver x sender when those vary) and benchmark/split.

    Seeds are pooled: all samples of all seeds of a (method, benchmark, split, sender,
    receiver) cell are averaged together and ``n`` counts every sample, so the interval
    reflects sample-to-sample variation only, not seed-to-seed variation. Samples whose
    last attempt errored (``error`` not NULL) are left out; so are samples where the
    metric is NULL. ``metric`` is ``success`` (Wilson interval, shown as a percentage),
    ``score``, ``steps`` or a numeric key of the ``metrics`` JSON (dots for nesting), all
    with a Student-t interval. Filters keep their given order in the layout.
    """
    value_sql, params = _value_sql(metric)
    where = ["s.error IS NULL"]
    for column, wanted in (("method", methods), ("benchmark", benchmarks), ("split", splits)):
        if wanted:
            where.append(f"list_contains(?, r.{column})")
            params.append(list(wanted))
    sql = f"""
        SELECT method, benchmark, split, sender, receiver,
               count(v) AS n, avg(v) AS mean, sum(v) AS total, stddev_samp(v) AS sd
        FROM (
            SELECT r.method, r.benchmark, r.split, r.sender, r.receiver, {value_sql} AS v
            FROM samples AS s JOIN runs AS r ON r.run_key = s.run_key
            WHERE {" AND ".join(where)}
        )
        GROUP BY method, benchmark, split, sender, receiver
        HAVING count(v) > 0
    """
    with Store(store_path).reader() as con:
        records = con.execute(sql, params).fetchall()

    percent = metric == "success"
    # A column varies when runs use different models; runs without one (None) do not count.
    varying = [name for name, idx in (("receiver", 4), ("sender", 3))
               if len({r[idx] for r in records if r[idx] is not None}) > 1]
    row_header = " / ".join(["method", *varying])

    def row_key(rec: tuple) -> tuple[str, ...]:
        parts = [rec[0]] + [rec[4] if name == "receiver" else rec[3] for name in varying]
        return tuple("-" if p is None else str(p) for p in parts)

    cells: dict[tuple[tuple[str, ...], str], Cell] = {}
    for rec in records:
        method, benchmark, split, _sender, _receiver, n, mean, total, sd = rec
        n = int(n)
        if percent:
            lo, hi = wilson(float(total), n)
        else:
            lo, hi = mean_interval(float(mean), sd, n)
        column = f"{benchmark}/{split}"
        cells[(row_key(rec), column)] = Cell(float(mean), n, lo, hi)

    benchmark_order = _order({str(r[1]) for r in records}, benchmarks)
    split_order = _order({str(r[2]) for r in records}, splits)
    present = {c for _, c in cells}
    columns = [f"{b}/{s}" for b in benchmark_order for s in split_order if f"{b}/{s}" in present]

    keys = {k for k, _ in cells}
    method_order = _order({k[0] for k in keys}, methods)
    ordered = sorted(keys, key=lambda k: (method_order.index(k[0]), k[1:]))
    rows: list[list[Cell | str]] = [
        [" / ".join(key), *(cells.get((key, c), MISSING) for c in columns)] for key in ordered
    ]
    title = f"{metric}: mean [95% CI] n (seeds pooled)"
    if percent:
        title = "success rate %: mean [95% Wilson CI] n (seeds pooled)"
    return Table(title=title, row_header=row_header, columns=columns, rows=rows, percent=percent)


# -- rendering -------------------------------------------------------------------------------


def _num(x: float, percent: bool) -> str:
    if percent:
        return f"{100 * x:.1f}"
    return f"{x:.1f}" if abs(x) >= 100 else f"{x:.2f}"


def cell_parts(cell: Cell, percent: bool) -> tuple[str, str]:
    """("61.2", "[55.0, 67.1] n=140") for a cell."""
    interval = (
        "" if cell.lo is None or cell.hi is None else f"[{_num(cell.lo, percent)}, {_num(cell.hi, percent)}] "
    )
    return _num(cell.value, percent), f"{interval}n={cell.n}"


def format_cell(cell: Cell | str, percent: bool) -> str:
    """One-line text of a cell: "61.2 [55.0, 67.1] n=140"; "–" when missing."""
    if not isinstance(cell, Cell):
        return cell or "–"
    value, rest = cell_parts(cell, percent)
    return f"{value} {rest}"


def render_rich(table: Table) -> RichTable:
    """A rich table: bold mean, dim interval and n."""
    out = RichTable(title=table.title)
    out.add_column(table.row_header, style="bold")
    for column in table.columns:
        out.add_column(column, justify="right")
    for row in table.rows:
        label, *cells = row
        rendered: list[Text | str] = [str(label)]
        for cell in cells:
            if isinstance(cell, Cell):
                value, rest = cell_parts(cell, table.percent)
                text = Text(value, style="bold")
                text.append(" " + rest, style="dim")
                rendered.append(text)
            else:
                rendered.append(Text(cell or "–", style="dim"))
        out.add_row(*rendered)
    return out


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(table: Table) -> str:
    """A GitHub-flavoured Markdown table, preceded by the title in bold."""
    header = [table.row_header, *table.columns]
    lines = []
    if table.title:
        lines += [f"**{_md_escape(table.title)}**", ""]
    lines.append("| " + " | ".join(_md_escape(h) for h in header) + " |")
    lines.append("| " + " | ".join(["---"] + ["---:"] * len(table.columns)) + " |")
    for row in table.rows:
        label, *cells = row
        parts = [_md_escape(str(label))] + [_md_escape(format_cell(c, table.percent)) for c in cells]
        lines.append("| " + " | ".join(parts) + " |")
    return "\n".join(lines) + "\n"


def render_csv(table: Table) -> str:
    """Tidy CSV: one line per non-missing cell (row label, column, value, n, lo, hi).

    Values are raw (success as a fraction in [0, 1], not a percentage); lo/hi are empty
    when there is no interval.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([table.row_header, "column", "value", "n", "lo", "hi"])
    for row in table.rows:
        label, *cells = row
        for column, cell in zip(table.columns, cells, strict=True):
            if not isinstance(cell, Cell):
                continue
            writer.writerow(
                [
                    label,
                    column,
                    repr(cell.value),
                    cell.n,
                    "" if cell.lo is None else repr(cell.lo),
                    "" if cell.hi is None else repr(cell.hi),
                ]
            )
    return buf.getvalue()
