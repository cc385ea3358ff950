"""The report a results section needs: tables in the paper's layouts, paired significance,
latency, and the efficiency plot; exported as Markdown, CSV, LaTeX, JSON and one HTML file.

Every table is built from ``leaderboard`` cells (mean, 95% interval, n, errors; seeds as the
leaderboard combines them) and ``observations`` (the episodes behind them). A row is compared
with the baseline configuration (``latent`` by default) of the same sender and receiver on the
episodes both played (``stats``): exact McNemar for success, Wilcoxon for other measures, Holm
across all comparisons of one table; ``*`` marks a Holm-adjusted p < 0.05.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from interlat_bench.results import leaderboard as lb
from interlat_bench.results import stats
from interlat_bench.results.store import Store

SIG = "*"
VALUE_ONLY = {"chance %"}  # a property of the benchmark, not an estimate: no interval
CELL_COLUMNS = ["row", "column", "measure", "value", "n", "lo", "hi", "errors", "vs", "delta", "p", "p_holm",
                "significant", "test"]


@dataclass
class ReportTable:
    """One table: ``cells`` long and numeric (one line per row x column x measure, with its
    comparison to the baseline), ``wide`` the display layout (rows x columns of text)."""

    name: str
    title: str
    notes: list[str]
    cells: pd.DataFrame
    wide: pd.DataFrame = field(default_factory=pd.DataFrame)


# -- cells and comparisons -------------------------------------------------------------------


def _bracket(row: str) -> str:
    label = row.split(" / ")[0]
    return label[label.index("["):] if "[" in label else ""


def _baseline_for(row: str, candidates: list[str]) -> str | None:
    """The baseline row to compare ``row`` with: same sender/receiver path; among several,
    the one whose differing fields (the bracket) match, else the first."""
    path = row.split(" / ")[1:]
    same = [c for c in candidates if c.split(" / ")[1:] == path and c != row]
    return next((c for c in same if _bracket(c) == _bracket(row)), same[0] if same else None)


def measure_cells(db, *, measure: str, metric: str, benchmarks=None, methods=None, by: str | None = None,
                  marks: dict | None = None, baseline: str = "latent") -> tuple[pd.DataFrame, str]:
    """Long cells of one measure with raw (unadjusted) comparisons; and the leaderboard title."""
    table = lb.leaderboard(db, methods=methods, benchmarks=benchmarks, metric=metric, marks=marks, by=by)
    lines = [{"row": label, "column": column, "measure": measure, "value": cell.value, "n": cell.n,
              "lo": cell.lo, "hi": cell.hi, "errors": cell.errors, "vs": None, "delta": None, "p": None, "test": None}
             for label, *cells in table.rows for column, cell in zip(table.columns, cells, strict=True)
             if isinstance(cell, lb.Cell)]
    bases = list(dict.fromkeys(line["row"] for line in lines if line["row"].split(" / ")[0].split("[")[0] == baseline))
    if bases:
        obs = lb.observations(db, methods=methods, benchmarks=benchmarks, metric=metric, marks=marks, by=by)
        episodes = {key: group for key, group in obs.groupby(["row", "column"], sort=False)}
        for line in lines:
            if line["row"] in bases:  # the baseline's own configurations are not its ablations
                continue
            vs = _baseline_for(line["row"], bases)
            mine, theirs = episodes.get((line["row"], line["column"])), episodes.get((vs, line["column"]))
            if mine is None or theirs is None:
                continue
            pair = mine.merge(theirs, on=["sample_id", "seed"], suffixes=("", "_base"))
            if pair.empty:
                continue
            result = stats.paired_test(pair["value"].to_numpy(), pair["value_base"].to_numpy(), metric == "success")
            line.update(vs=vs, delta=result.delta, p=result.p, test=result.test)
    frame = pd.DataFrame(lines, columns=[c for c in CELL_COLUMNS if c not in ("p_holm", "significant")])
    frame["p"] = frame["p"].astype(float)
    return frame, table.title


def adjust(frame: pd.DataFrame) -> pd.DataFrame:
    """Holm across every comparison in the table; ``significant`` at the adjusted 5% level."""
    frame = frame.copy()
    tested = frame["p"].notna()
    adjusted = iter(stats.holm(frame.loc[tested, "p"].tolist()))
    frame["p_holm"] = [next(adjusted) if t else math.nan for t in tested]
    frame["significant"] = [bool(p < stats.ALPHA) for p in frame["p_holm"]]  # NaN: untested, False
    return frame


def cell_text(line: pd.Series, percent: bool) -> str:
    """'61.2 [55.0, 67.1] n=140*' (errors and the significance mark when there are any)."""
    if line["measure"] in VALUE_ONLY:
        return lb._num(line["value"], percent)
    cell = lb.Cell(line["value"], int(line["n"]), _none(line["lo"]), _none(line["hi"]), int(line["errors"]))
    return lb.format_cell(cell, percent) + (SIG if line.get("significant") is True else "")


def _none(x):
    return None if x is None or pd.isna(x) else float(x)


def _wide(cells: pd.DataFrame, header: str, percent_measures: set[str], column_name) -> pd.DataFrame:
    if cells.empty:
        return pd.DataFrame()
    texts = cells.assign(text=[cell_text(line, line["measure"] in percent_measures) for _, line in cells.iterrows()],
                         col=[column_name(line) for _, line in cells.iterrows()])
    order_rows = list(dict.fromkeys(texts["row"]))
    order_cols = list(dict.fromkeys(texts["col"]))
    wide = texts.pivot_table(index="row", columns="col", values="text", aggfunc="first")
    wide = wide.reindex(index=order_rows, columns=order_cols).fillna("–")
    wide.index.name, wide.columns.name = header, None
    return wide


def _notes(title: str, baseline: str, frame: pd.DataFrame) -> list[str]:
    notes = [title]
    if frame["p"].notna().any():
        notes.append(f"{SIG} differs from {baseline} of the same sender/receiver on the episodes both played "
                     f"(same samples and seeds; exact McNemar for success, Wilcoxon signed-rank otherwise; "
                     f"Holm-adjusted p < 0.05 over the {int(frame['p'].notna().sum())} comparisons of this table)")
    return notes


# -- the tables ------------------------------------------------------------------------------


def _benchmarks_present(db) -> set[str]:
    with Store(db).reader() as con:
        return {r[0] for r in con.execute("SELECT DISTINCT benchmark FROM runs").fetchall()}


def alfworld_table(db, baseline: str, marks) -> ReportTable | None:
    """Paper Table 1 layout: success and steps per method, seen and unseen side by side."""
    parts = []
    for measure, metric in (("success %", "success"), ("steps", "steps"), ("valid actions", "valid_actions")):
        cells, title = measure_cells(db, measure=measure, metric=metric, benchmarks=["alfworld"], marks=marks,
                                     baseline=baseline)
        if measure == "success %":
            first_title = title
        parts.append(cells)
    cells = pd.concat([p for p in parts if not p.empty], ignore_index=True) if any(
        not p.empty for p in parts) else pd.DataFrame()
    if cells.empty:
        return None
    cells = adjust(cells)
    wide = _wide(cells, "method", {"success %"}, lambda line: f"{line['measure']} {line['column'].split('/', 1)[1]}")
    notes = _notes(first_title, baseline, cells) + [
        "steps: mean over all episodes, an errored or unfinished episode counts at the step cap; "
        "valid actions: share of turns whose reply was an admissible command"]
    return ReportTable("alfworld", "ALFWorld: success and steps, seen and unseen", notes, cells, wide)


def math_table(db, baseline: str, marks) -> ReportTable | None:
    """Accuracy per method overall, by level and by subject."""
    parts, title = [], ""
    for by in (None, "level", "subject"):
        cells, t = measure_cells(db, measure=f"accuracy{'' if by is None else ' by ' + by}", metric="success",
                                 benchmarks=["math"], by=by, marks=marks, baseline=baseline)
        title = title or t
        parts.append(cells)
    if all(p.empty for p in parts):
        return None
    cells = adjust(pd.concat(parts, ignore_index=True))
    wide = _wide(cells, "method", set(cells["measure"]), lambda line: line["column"].removeprefix("math/"))
    return ReportTable("math", "MATH: accuracy overall, by level and by subject", _notes(title, baseline, cells),
                       cells, wide)


def probe_table(db, baseline: str, marks) -> ReportTable | None:
    """The channel probe: accuracy against chance, how often the plan states the target's own
    fact, and fidelity (accuracy on those samples): what the channel loses, apart from what the
    sender never said."""
    cells, title = measure_cells(db, measure="accuracy %", metric="success", benchmarks=["probe"], marks=marks,
                                 baseline=baseline)
    if cells.empty:
        return None
    extra = [measure_cells(db, measure="chance %", metric="chance", benchmarks=["probe"], marks=marks,
                           baseline="-")[0]]  # descriptive columns: no test
    # The plan's columns from the same rows as accuracy (a leaderboard of a metric that older runs
    # lack would label its rows differently).
    ladder = probe_ladder(db, marks)
    for measure, name in (("plan states fact %", "fact_in_plan"), ("fidelity %", "fidelity"),
                          ("no option named %", "no_option")):
        if not ladder.empty:
            extra.append(pd.DataFrame([{
                "row": line["label"], "column": line["column"], "measure": measure, "value": line[name],
                "n": line[f"{name}_n"], "lo": line[f"{name}_lo"], "hi": line[f"{name}_hi"], "errors": 0}
                for _, line in ladder.iterrows() if line[f"{name}_n"]]))
    cells = adjust(cells)
    cells = pd.concat([cells, *[e for e in extra if not e.empty]], ignore_index=True)
    wide = _wide(cells, "method", set(cells["measure"]), lambda line: f"{line['measure']} {line['column']}")
    notes = _notes(title, baseline, cells) + [
        "plan states fact: share of plans with a sentence naming the target and then the answer's colour; "
        "fidelity: accuracy on those samples only (its n); both blank for no_comm, which sends no plan",
        "no option named: share of replies naming none of the options, each scored wrong; where it is large, "
        "accuracy can fall below chance (a destroyed message that silences the receiver). Scored by rank "
        "(`--setting answer=rank`: the likeliest of the option sentences) every reply names one"]
    return ReportTable("probe", "Channel probe: accuracy, chance level, plans that state the fact, fidelity",
                       notes, cells, wide)


RUNG_FIELDS = ("n_facts", "n_options", "plan_tokens")  # what a rung sets; plan tokens scale with facts


def probe_ladder(db, marks=None) -> pd.DataFrame:
    """The probe per configuration and rung (n_facts x n_options): accuracy, fidelity and the
    share of replies that name no option, with 95% intervals. A configuration is a leaderboard
    row with the rung's own fields taken out of its label; seeds pool as in the leaderboard (one
    sample played once: Wilson; replayed by several seeds: Student-t over per-sample means).
    Errored samples count as failures in accuracy and are left out of fidelity (they have no
    plan verdict) and of the no-option share (no reply). Unfinished runs are left out, as in the
    leaderboard: an interrupted run's first samples are not a rung's result."""
    labels = dict(lb.run_rows(db, marks=marks).itertuples(index=False, name=None))
    with Store(db).reader() as con:
        obs = con.execute("""
            SELECT r.run_key, r.method, r.split, s.sample_id, r.seed,
                   TRY_CAST(json_extract(r.spec, '$.benchmark_params.n_facts') AS INTEGER) AS n_facts,
                   TRY_CAST(json_extract(r.spec, '$.benchmark_params.n_options') AS INTEGER) AS n_options,
                   CASE WHEN s.error IS NULL AND s.success THEN 1.0 ELSE 0.0 END AS accuracy,
                   TRY_CAST(json_extract(s.metrics, '$.fact_in_plan') AS DOUBLE) AS fact_in_plan,
                   TRY_CAST(json_extract(s.metrics, '$.fidelity') AS DOUBLE) AS fidelity,
                   -- a reply that names no option (errored samples, which have no reply, left out)
                   CASE WHEN s.error IS NULL THEN CAST(json_type(s.metrics, '$.predicted') = 'NULL' AS DOUBLE)
                   END AS no_option
            FROM samples s JOIN runs r USING (run_key)
            WHERE r.benchmark = 'probe' AND NOT list_contains(?, r.status)""", [list(lb.UNFINISHED)]).df()
    obs = obs[obs["run_key"].isin(labels)].dropna(subset=["n_facts", "n_options"])  # runs that name their rung
    if obs.empty:
        return pd.DataFrame()
    obs["label"] = [labels[k] for k in obs["run_key"]]
    lines = []
    for (label, method, split, n_facts, n_options), g in obs.groupby(
            ["label", "method", "split", "n_facts", "n_options"], sort=False):
        line = {"label": label, "row": _without_rung(label), "method": method, "column": f"probe/{split}",
                "n_facts": int(n_facts), "n_options": int(n_options), "chance": 1 / n_options,
                "seeds": g["seed"].nunique()}
        for measure in ("accuracy", "fact_in_plan", "fidelity", "no_option"):
            per_sample = g.dropna(subset=[measure]).groupby("sample_id")[measure]
            means, k = per_sample.mean(), int(per_sample.count().max()) if len(per_sample) else 0
            n = len(means)
            if k > 1:
                lo, hi = lb.mean_interval(float(means.mean()), float(means.std()), n)
                lo, hi = (None, None) if lo is None else (max(0.0, lo), min(1.0, hi))
            else:
                lo, hi = lb.wilson(float(means.sum()), n) if n else (None, None)
            line.update({measure: float(means.mean()) if n else None, f"{measure}_lo": lo, f"{measure}_hi": hi,
                         f"{measure}_n": n})
        lines.append(line)
    return pd.DataFrame(lines).sort_values(["n_options", "n_facts", "method", "row"], ignore_index=True)


def _without_rung(label: str) -> str:
    """'latent[n_facts=4,preset=cpu] / ...' -> 'latent[preset=cpu] / ...'."""
    head, sep, rest = label.partition(" / ")
    if "[" in head:
        name, _, inside = head.partition("[")
        kept = [p.strip() for p in inside.rstrip("]").split(",") if p.split("=")[0].strip() not in RUNG_FIELDS]
        head = name + (f"[{', '.join(kept)}]" if kept else "")
    return head + sep + rest


def ladder_table(db, baseline: str, marks) -> ReportTable | None:
    """The probe ladder, one line per rung and configuration (two rungs at least)."""
    ladder = probe_ladder(db, marks)
    if ladder.empty or ladder[["n_facts", "n_options"]].drop_duplicates().shape[0] < 2:
        return None

    def cell(line, measure):
        if line[measure] is None or pd.isna(line[measure]):
            return "–"
        lo, hi = line[f"{measure}_lo"], line[f"{measure}_hi"]
        ci = "" if lo is None or pd.isna(lo) else f" [{100 * lo:.1f}, {100 * hi:.1f}]"
        return f"{100 * line[measure]:.1f}{ci} n={line[f'{measure}_n']}"

    wide = pd.DataFrame([{"rung": f"{line['n_facts']} facts, {line['n_options']} options",
                          "configuration": line["row"], "chance %": f"{100 * line['chance']:.1f}",
                          "accuracy %": cell(line, "accuracy"), "plan states fact %": cell(line, "fact_in_plan"),
                          "fidelity %": cell(line, "fidelity"),
                          "no option named %": "–" if pd.isna(line["no_option"]) else f"{100 * line['no_option']:.1f}",
                          "seeds": line["seeds"]} for _, line in ladder.iterrows()]).set_index("rung")
    notes = ["The channel probe at each rung (n_facts x n_options; plan tokens scale with the facts). "
             "accuracy: all samples, errors count as failures; fidelity: accuracy where the plan states the "
             "target's own fact (its n); 95% Wilson interval for one seed, Student-t over per-sample means "
             "for several; chance = 1 / n_options; no option named: share of replies naming none (scored wrong)"]
    return ReportTable("ladder", "Channel probe ladder: accuracy and fidelity per rung", notes, ladder, wide)


def ladder_plot(ladder: pd.DataFrame, path: Path) -> Path | None:
    """Accuracy and fidelity against n_facts, one panel pair per n_options, a line per configuration (SVG)."""
    if ladder.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    options = sorted(ladder["n_options"].unique())
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colour = {row: cycle[i % len(cycle)] for i, row in enumerate(dict.fromkeys(ladder["row"]))}  # one per line
    fig, axes = plt.subplots(len(options), 2, figsize=(9, 3.4 * len(options)), squeeze=False)
    for (ax_a, ax_f), n_options in zip(axes, options, strict=True):
        rung = ladder[ladder["n_options"] == n_options]
        for row, g in rung.groupby("row", sort=False):
            g = g.sort_values("n_facts")
            for ax, measure in ((ax_a, "accuracy"), (ax_f, "fidelity")):
                h = g.dropna(subset=[measure])
                if h.empty:
                    continue
                lo = (h[measure] - h[f"{measure}_lo"].astype(float)).fillna(0)
                hi = (h[f"{measure}_hi"].astype(float) - h[measure]).fillna(0)
                ax.errorbar(h["n_facts"], 100 * h[measure], yerr=[100 * lo, 100 * hi], marker="o", capsize=3,
                            label=row, color=colour[row])
        for ax, measure in ((ax_a, "accuracy"), (ax_f, "fidelity")):
            ax.axhline(100 / n_options, color="grey", linestyle=":", label="chance")
            ax.set(xscale="log", xlabel="facts in the task", ylabel=f"{measure} %", ylim=(0, 101),
                   title=f"{measure}, {n_options} options")
            ax.set_xticks(sorted(rung["n_facts"].unique()), [str(x) for x in sorted(rung["n_facts"].unique())])
            ax.minorticks_off()
            ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)
    return path


def ablation_table(db, baseline: str, marks) -> ReportTable | None:
    """Paper ablation layout: one row per configuration, its success and the difference to the
    baseline in percentage points with the paired test, per benchmark column."""
    cells, title = measure_cells(db, measure="success %", metric="success", marks=marks, baseline=baseline)
    if cells.empty or cells["p"].notna().sum() == 0:
        return None
    cells = adjust(cells)
    lines = []
    for _, line in cells.iterrows():
        entry = {"method": line["row"], "column": line["column"], "success %": cell_text(line, True)}
        if isinstance(line["vs"], str):
            entry[f"Δ vs {baseline} (pp)"] = f"{100 * line['delta']:+.1f}" + (SIG if line["significant"] else "")
            entry["p (Holm)"] = f"{line['p_holm']:.2g}"
        lines.append(entry)
    wide = pd.DataFrame(lines).fillna("–").set_index("method")
    return ReportTable("ablations", f"Ablations: difference to {baseline}", _notes(title, baseline, cells),
                       cells, wide)


# -- latency ---------------------------------------------------------------------------------

_LATENCY_SQL = """
    WITH t AS (
        SELECT run_key, sample_id, stage, sum(ms) AS ms FROM timings GROUP BY ALL
    ), per_sample AS (
        SELECT t.run_key, t.sample_id,
               sum(ms) FILTER (WHERE stage = 'sender') AS sender,
               sum(ms) FILTER (WHERE stage = 'adapter') AS adapter,
               sum(ms) FILTER (WHERE stage = 'receiver') AS receiver,
               sum(ms) FILTER (WHERE stage IN ('env', 'grading')) AS env,
               sum(ms) FILTER (WHERE stage = 'wall') AS wall
        FROM t GROUP BY ALL
    )
    SELECT p.*, r.benchmark, r.device, TRY_CAST(json_extract(r.spec, '$.method_params.k') AS INTEGER) AS k,
           TRY_CAST(s.metrics->>'message_rows' AS DOUBLE) AS rows,
           TRY_CAST(s.metrics->>'message_bytes' AS DOUBLE) AS bytes,
           TRY_CAST(s.metrics->>'message_layers' AS DOUBLE) AS layers
    FROM per_sample AS p JOIN runs AS r USING (run_key)
    JOIN samples AS s ON s.run_key = p.run_key AND s.sample_id = p.sample_id
"""

STAGES = ("sender", "adapter", "receiver", "env", "wall", "comm")


def latency_frame(db, marks=None) -> pd.DataFrame:
    """Per configuration, benchmark and device: median and p90 per sample of each stage (ms),
    communication time (sender + adapter: producing and delivering the message), and the
    message as shipped (mean rows, mean bytes)."""
    with Store(db).reader() as con:
        per = con.execute(_LATENCY_SQL).df()
    if per.empty:
        return pd.DataFrame()
    keys = _row_labels(db, marks)
    per["row"] = per["run_key"].map(keys)
    per = per[per["row"].notna()]
    # No sender time: the messages came from the cache, so this run did not wait for them.
    per["comm"] = per["sender"] + per["adapter"].fillna(0)
    out = []
    for (bench, row, dev), g in per.groupby(["benchmark", "row", "device"], sort=True, dropna=False):
        entry: dict[str, Any] = {"row": row, "benchmark": bench, "device": dev, "n": len(g),
                                 "k": None if g["k"].isna().all() else int(g["k"].dropna().iloc[0])}
        for stage in STAGES:
            vals = g[stage].dropna()
            entry[f"{stage} median ms"] = float(vals.median()) if len(vals) else None
            entry[f"{stage} p90 ms"] = float(vals.quantile(0.9)) if len(vals) else None
        entry["rows"] = float(g["rows"].mean()) if g["rows"].notna().any() else None
        entry["bytes"] = float(g["bytes"].mean()) if g["bytes"].notna().any() else None
        entry["layers"] = float(g["layers"].mean()) if g["layers"].notna().any() else None
        out.append(entry)
    return pd.DataFrame(out)


def _row_labels(db, marks) -> dict[str, str]:
    """run_key -> its leaderboard row label (one labelling for every table); shape-model runs
    included, as the latency tables read them."""
    frame = lb.run_rows(db, marks=marks, timing_only=True)
    return dict(zip(frame["run_key"], frame["row"], strict=True))


def efficiency_frame(db, latency: pd.DataFrame, marks=None) -> pd.DataFrame:
    """Communication time and score against K: full latents (K = mean rows of ``latent``) and
    each ``untrained_k`` / ``compressed_k`` K, per benchmark and device."""
    if latency.empty:
        return pd.DataFrame()
    score = lb.leaderboard(db, metric="success", marks=marks)
    success = {(label, column.split("/")[0]): cell.value for label, *cells in score.rows
               for column, cell in zip(score.columns, cells, strict=True) if isinstance(cell, lb.Cell)}
    lines = []
    for _, line in latency.iterrows():
        method = line["row"].split(" / ")[0].split("[")[0]
        if method not in ("latent", "untrained_k", "compressed_k"):
            continue
        k = line["rows"] if method == "latent" else line["k"]
        if pd.isna(line["comm median ms"]):  # messages from the cache: no communication was waited for
            continue
        lines.append({"row": line["row"], "method": method, "benchmark": line["benchmark"], "device": line["device"],
                      "K": k, "comm median ms": line["comm median ms"],
                      "success": success.get((line["row"], line["benchmark"]))})
    return pd.DataFrame(lines)


def comm_ratio(eff: pd.DataFrame, k: int = 8) -> list[str]:
    """'full / K=8 communication time' per benchmark and device (never across devices)."""
    out = []
    if eff.empty:
        return out
    for (bench, dev), g in eff.groupby(["benchmark", "device"], dropna=False):
        full = g[g["method"] == "latent"]["comm median ms"]
        for method in ("compressed_k", "untrained_k"):
            at_k = g[(g["method"] == method) & (g["K"] == k)]["comm median ms"]
            if len(full) and len(at_k) and at_k.iloc[0]:
                out.append(f"{bench} on {dev}: full latents / {method} K={k} communication time = "
                           f"{full.iloc[0] / at_k.iloc[0]:.1f}x ({full.iloc[0]:.0f} ms / {at_k.iloc[0]:.0f} ms, "
                           f"medians per sample)")
    return out


def latency_table(db, marks) -> tuple[ReportTable | None, pd.DataFrame]:
    frame = latency_frame(db, marks)
    if frame.empty:
        return None, pd.DataFrame()
    eff = efficiency_frame(db, frame, marks)
    wide = frame.copy()
    for stage in STAGES:
        med, p90 = wide.pop(f"{stage} median ms"), wide.pop(f"{stage} p90 ms")
        wide[f"{stage} ms (median / p90)"] = [
            "–" if pd.isna(a) else f"{a:.0f} / {b:.0f}" for a, b in zip(med, p90, strict=True)]
    wide["message rows"] = wide.pop("rows").map(lambda x: "–" if pd.isna(x) else f"{x:.1f}")
    wide["message bytes"] = wide.pop("bytes").map(lambda x: "–" if pd.isna(x) else f"{x:.0f}")
    wide.pop("layers")
    wide = wide.set_index("row")
    wide.pop("k")
    notes = ["per sample, in ms as waited for: sender (plan or latent steps; – where the run reused cached "
             "messages, so no sender ran), adapter, receiver (on MATH and probe the whole batch's decoding "
             "where replies were decoded together, `run --eval-batch`; 1 for per-sample latency), "
             "env (ALFWorld engine or MATH grading), "
             "wall (the whole sample); comm = sender + adapter; message bytes as shipped (float16 latents, "
             "UTF-8 text); one device per line", *comm_ratio(eff)]
    return ReportTable("latency", "Latency per method and benchmark", notes, frame, wide), eff


# -- the latent-communication families -------------------------------------------------------

FAMILIES = ("latentmas", "kv_share", "cipher", "activation")
# What each family is compared with: the trained receivers' text and no_comm, and the plain
# receiver model the training-free families use, reading the plan as text or alone.
REFERENCES = ("text", "no_comm", "text_zeroshot", "no_comm_zeroshot")


def _method(row: str) -> str:
    return row.split(" / ")[0].split("[")[0]


def families_table(db, marks) -> ReportTable | None:
    """Every training-free family's configurations side by side: success with its interval, the
    paired difference to each reference present (Holm over all of them), and what crossed the
    channel (mean bytes as shipped, positions or rows, layers) and how long it took (sender
    median ms per sample, as waited for)."""
    compared = []
    for ref in REFERENCES:
        cells, title = measure_cells(db, measure="success %", metric="success", marks=marks, baseline=ref)
        compared.append(cells[cells["row"].map(_method).isin(FAMILIES)])
    if all(c.empty for c in compared):
        return None
    cells = adjust(pd.concat([c for c in compared if not c.empty], ignore_index=True))
    latency = latency_frame(db, marks)
    shipped = {(line["row"], line["benchmark"]): line for _, line in latency.iterrows()}
    lines = []
    for (row, column), group in cells.groupby(["row", "column"], sort=False):
        first = group.iloc[0]
        entry = {"configuration": row, "column": column, "success %": cell_text(first.drop("significant"), True)}
        for _, line in group.iterrows():
            if isinstance(line["vs"], str):
                entry[f"Δ vs {_method(line['vs'])} (pp)"] = \
                    f"{100 * line['delta']:+.1f} (p {line['p_holm']:.2g}){SIG if line['significant'] else ''}"
        sent = shipped.get((row, column.split("/")[0]))
        if sent is not None:
            entry["bytes"] = "–" if pd.isna(sent["bytes"]) else f"{sent['bytes']:.0f}"
            entry["positions / rows"] = "–" if pd.isna(sent["rows"]) else f"{sent['rows']:.1f}"
            entry["layers"] = "–" if pd.isna(sent["layers"]) else f"{sent['layers']:.0f}"
            entry["sender ms"] = "–" if pd.isna(sent["sender median ms"]) else f"{sent['sender median ms']:.0f}"
        lines.append(entry)
    wide = pd.DataFrame(lines).fillna("–").set_index("configuration")
    notes = [title, "Δ: paired difference in success to each reference of the same sender/receiver on the samples "
             f"both played (exact McNemar, Holm over the {int(cells['p'].notna().sum())} comparisons of this table; "
             f"{SIG}: adjusted p < 0.05); text and no_comm train their receivers, the _zeroshot references are the "
             "plain receiver model the families use", "bytes: mean per sample as shipped (KV, embeddings and "
             "activations at the dtype they were computed in); positions: KV positions, or rows of embeddings; "
             "layers: KV layers sent whole, or 1 (the activation's layer); sender ms: median per sample"]
    return ReportTable("families", "Latent-communication families on one protocol", notes, cells, wide)


# -- the whole report ------------------------------------------------------------------------


def success_table(db, benchmark: str, baseline: str, marks) -> ReportTable | None:
    """A benchmark's success rate per method and split: the table of a benchmark that declares
    no layout of its own (``Benchmark.report_tables``)."""
    cells, title = measure_cells(db, measure="success %", metric="success", benchmarks=[benchmark], marks=marks,
                                 baseline=baseline)
    if cells.empty:
        return None
    cells = adjust(cells)
    wide = _wide(cells, "method", {"success %"}, lambda line: f"{line['measure']} {line['column'].split('/', 1)[1]}")
    return ReportTable(benchmark, f"{benchmark}: success per method and split", _notes(title, baseline, cells),
                       cells, wide)


TableBuilder = Callable[[Any, str, Any], list]


def tables(db: str | os.PathLike[str], baseline: str = "latent", marks: dict | None = None,
           per_benchmark: dict[str, TableBuilder] | None = None) -> dict[str, ReportTable]:
    """Every table the results hold, by name: each benchmark's (``per_benchmark``: name ->
    builder of its tables, ``Benchmark.report_tables``; else its success table), ablations,
    latency and efficiency. ``per_benchmark`` None: the registered benchmarks' own."""
    if per_benchmark is None:
        from interlat_bench.harness.core.registry import benchmarks

        per_benchmark = {name: cls.report_tables for name, cls in benchmarks.items()}
    out: dict[str, ReportTable] = {}
    for bench in sorted(_benchmarks_present(db)):
        build = per_benchmark.get(bench) or (lambda db_, b, m, bench=bench: [success_table(db_, bench, b, m)])
        for t in build(db, baseline, marks):
            if t is not None:
                out[t.name] = t
    if (t := ablation_table(db, baseline, marks)) is not None:
        out[t.name] = t
    if (t := families_table(db, marks)) is not None:
        out[t.name] = t
    latency, eff = latency_table(db, marks)
    if latency is not None:
        out[latency.name] = latency
        out["efficiency"] = ReportTable("efficiency", "Communication time and score against K",
                                        comm_ratio(eff) or ["no untrained_k / compressed_k runs beside latent"],
                                        eff, _efficiency_wide(eff))
    return out


def _efficiency_wide(eff: pd.DataFrame) -> pd.DataFrame:
    if eff.empty:
        return eff
    wide = eff.set_index("row").drop(columns=["method"])
    wide["K"] = wide["K"].map(lambda k: f"{k:.1f}" if k % 1 else f"{k:.0f}")
    wide["comm median ms"] = wide["comm median ms"].map(lambda x: f"{x:.1f}")
    wide["success %"] = wide.pop("success").map(lambda x: "–" if pd.isna(x) else f"{100 * x:.1f}")
    return wide


def efficiency_plot(eff: pd.DataFrame, path: Path) -> Path | None:
    """The paper's efficiency figure: communication time and success against K (SVG)."""
    if eff.empty or not (eff["method"] != "latent").any():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(eff.groupby(["benchmark", "device"], dropna=False))
    fig, axes = plt.subplots(len(groups), 2, figsize=(9, 3.4 * len(groups)), squeeze=False)
    for (ax_t, ax_s), ((bench, dev), g) in zip(axes, groups, strict=True):
        for method, marker in (("untrained_k", "o"), ("compressed_k", "s"), ("latent", "*")):
            m = g[g["method"] == method].sort_values("K")
            if m.empty:
                continue
            label = "full latents" if method == "latent" else method
            ax_t.plot(m["K"], m["comm median ms"], marker=marker, label=label)
            if m["success"].notna().any():
                ax_s.plot(m["K"], 100 * m["success"], marker=marker, label=label)
        ax_t.set(xscale="log", yscale="log", xlabel="K (message rows)", ylabel="communication ms (median)",
                 title=f"{bench} on {dev}")
        ax_s.set(xscale="log", xlabel="K (message rows)", ylabel="success %", title=f"{bench}: success")
        ax_t.legend(fontsize=8)
        ax_s.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="svg", metadata={"Date": None})  # no timestamp: same data, same file
    plt.close(fig)
    return path


# -- rendering -------------------------------------------------------------------------------


def to_markdown(t: ReportTable) -> str:
    """A GitHub-flavoured Markdown table under its title and notes."""
    def cell(x) -> str:
        return str(x).replace("|", "\\|")

    lines = [f"### {t.title}", "", *[f"_{cell(n)}_\n" for n in t.notes]]
    if t.wide.empty:
        return "\n".join(lines + ["(empty)", ""])
    header = [t.wide.index.name or "", *map(str, t.wide.columns)]
    lines.append("| " + " | ".join(map(cell, header)) + " |")
    lines.append("| " + " | ".join(["---"] + ["---:"] * len(t.wide.columns)) + " |")
    for label, values in t.wide.iterrows():
        lines.append("| " + " | ".join(map(cell, [label, *values])) + " |")
    return "\n".join(lines) + "\n"


LATEX_SPECIALS = {ch: "\\" + ch for ch in "%&#_$"}


def to_latex(t: ReportTable) -> str:
    """A booktabs LaTeX table (``\\toprule``, ``\\midrule``, ``\\bottomrule``; needs
    ``\\usepackage{booktabs}``), the notes as comments above it."""
    if t.wide.empty:
        return ""
    styler = t.wide.style.format(escape="latex").format_index(escape="latex", axis=0) \
        .format_index(escape="latex", axis=1)
    caption = "".join(LATEX_SPECIALS.get(ch, ch) for ch in t.title)
    body = styler.to_latex(hrules=True, caption=caption)
    return "".join(f"% {n}\n" for n in t.notes) + body


def to_json(tables_: dict[str, ReportTable]) -> str:
    def clean(v):
        if isinstance(v, float) and math.isnan(v):
            return None
        return v.item() if hasattr(v, "item") else v

    return json.dumps({name: {"title": t.title, "notes": t.notes,
                              "cells": [{k: clean(v) for k, v in rec.items()} for rec in t.cells.to_dict("records")]}
                       for name, t in tables_.items()}, indent=1, default=str)


_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead th { border-bottom: 2px solid #444; }
p.note { color: #555; margin: 0.2em 0; font-size: 12px; }
section { overflow-x: auto; }
"""


def to_html(tables_: dict[str, ReportTable], plots: dict[str, tuple[str, str]], meta: dict[str, str]) -> str:
    """One self-contained page: every table, its notes, the plots inline (name -> (title, SVG);
    no script, no network)."""
    from html import escape

    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>interlat-bench report</title>"
             f"<style>{_CSS}</style></head><body><h1>interlat-bench report</h1>",
             "<p class='note'>" + " · ".join(f"{escape(k)}: {escape(v)}" for k, v in meta.items()) + "</p>"]
    for name, t in tables_.items():
        parts.append(f"<section id='table-{escape(name)}'><h2>{escape(t.title)}</h2>")
        parts += [f"<p class='note'>{escape(n)}</p>" for n in t.notes]
        if not t.wide.empty:
            parts.append(t.wide.reset_index().to_html(escape=True, border=0, index=False,
                                                      classes=f"report {escape(name)}"))
        parts.append("</section>")
    for name, (title, svg) in plots.items():
        body = svg[svg.index("<svg"):]  # inline: drop the XML prologue and doctype
        parts.append(f"<section id='plot-{escape(name)}'><h2>{escape(title)}</h2>{body}</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write(db: str | os.PathLike[str], out: Path, *, baseline: str = "latent", marks: dict | None = None,
          html: bool = False, per_benchmark: dict[str, TableBuilder] | None = None) -> dict[str, Path]:
    """Build every table and write report.md, report.json, <table>.csv / .tex, efficiency.svg and
    ladder.svg (when those tables exist), and (``html``) report.html into ``out``; each file is written atomically. Returns the paths."""
    from datetime import datetime, timezone

    from interlat_bench.harness.core.atomic import write_text

    found = tables(db, baseline=baseline, marks=marks, per_benchmark=per_benchmark)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}

    def put(name: str, text: str) -> None:
        write_text(out / name, text)
        written[name] = out / name

    put("report.md", "\n".join(to_markdown(t) for t in found.values()))
    put("report.json", to_json(found))
    for name, t in found.items():
        put(f"{name}.csv", t.cells.to_csv(index=False))
        if (tex := to_latex(t)):
            put(f"{name}.tex", tex)
    plots: dict[str, tuple[str, str]] = {}
    for name, title, draw in (("efficiency", "Communication time and success against K", efficiency_plot),
                              ("ladder", "Channel probe ladder: accuracy and fidelity per rung", ladder_plot)):
        if name in found and (plot := draw(found[name].cells, out / f".{name}.svg")):
            plots[name] = (title, plot.read_text())
            plot.unlink()
            put(f"{name}.svg", plots[name][1])
    if html:
        with Store(db).reader() as con:
            devices = sorted({str(r[0]) for r in con.execute("SELECT DISTINCT device FROM runs").fetchall()})
        meta = {"results": str(db), "written": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                "devices": ", ".join(devices), "baseline": baseline}
        put("report.html", to_html(found, plots, meta))
    return written
