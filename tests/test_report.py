"""The report: paired tests pinned to known values, tables with intervals and significance
marks, breakdowns, exports, the pandas API, and an HTML file that renders in Chromium."""

import json
import shutil
import subprocess
from math import comb

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from interlat_bench.harness.cli import app
from interlat_bench.results import frames, report, stats
from interlat_bench.results.leaderboard import leaderboard
from interlat_bench.results.store import Store

# -- statistics against known values ---------------------------------------------------------

def test_exact_mcnemar_is_the_binomial_test_on_discordant_pairs():
    row = np.array([1] * 10 + [0] * 2 + [1] * 5 + [0] * 3)
    base = np.array([0] * 10 + [1] * 2 + [1] * 5 + [0] * 3)
    result = stats.mcnemar_exact(row, base)
    assert (result.only_row, result.only_baseline, result.n) == (10, 2, 20)
    assert result.p == pytest.approx(2 * sum(comb(12, k) for k in range(3)) / 2 ** 12)  # 0.03857
    assert result.delta == pytest.approx(8 / 20)
    assert stats.mcnemar_exact(row, row).p == 1.0  # no discordant pair: no evidence


def test_holm_and_wilcoxon_known_values():
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    # Six positive differences: the exact two-sided signed-rank p is 2 / 2^6.
    assert stats.wilcoxon_paired([3, 4, 5, 6, 7, 9], [1, 1, 1, 1, 1, 1]).p == pytest.approx(2 / 64)
    assert stats.wilcoxon_paired([1, 2], [1, 2]).p == 1.0


# -- tables from a known database ------------------------------------------------------------

def _write(db, method, outcomes, *, benchmark="probe", split="test", seed=0, levels=None, ids=None):
    store = Store(db)
    run_key = f"{method}-{benchmark}-{split}-{seed}"
    with store.writer() as con:
        store.upsert_run(con, {"run_key": run_key, "method": method, "benchmark": benchmark, "split": split,
                               "seed": seed, "receiver_model": "m", "sender_model": "m", "status": "complete",
                               "device": "cpu", "spec": {"method": method, "seed": seed}})
        store.insert_samples(con, [
            {"run_key": run_key, "sample_id": (ids or [f"q{i}" for i in range(len(outcomes))])[i],
             "success": bool(ok), "score": float(ok), "steps": 1,
             "metrics": {"chance": 0.25, **({"level": levels[i]} if levels else {})}}
            for i, ok in enumerate(outcomes)])
        store.insert_timings(con, [{"run_key": run_key, "sample_id": f"q{i}", "stage": stage, "ms": ms}
                                   for i in range(len(outcomes)) for stage, ms in (("receiver", 10.0 + i),
                                                                                   ("wall", 12.0 + i))])


@pytest.fixture
def known_db(tmp_path):
    db = tmp_path / "r.duckdb"
    latent = [1] * 30 + [0] * 10
    _write(db, "latent", latent)
    _write(db, "no_comm", [0] * 35 + [1] * 5)           # far below latent
    _write(db, "text", latent[:-1] + [1])               # one discordant pair: not significant
    _write(db, "whitenoise", [1] * 30, ids=[f"q{i}" for i in range(10, 40)])  # shares 30 samples only
    return db


def test_tables_compare_each_row_with_latent_on_shared_samples(known_db):
    t = report.tables(known_db)["probe"]
    cells = t.cells[t.cells["measure"] == "accuracy %"].set_index("row")
    assert bool(cells.loc["no_comm", "significant"]) and not bool(cells.loc["text", "significant"])
    assert pd.isna(cells.loc["latent", "vs"])  # the baseline is not compared with itself
    # no_comm vs latent: latent alone wins on q0..q29, no_comm alone on q35..q39 (latent fails there).
    expected = stats.mcnemar_exact(np.array([0] * 35 + [1] * 5), np.array([1] * 30 + [0] * 10))
    assert (expected.only_row, expected.only_baseline) == (5, 30)
    assert cells.loc["no_comm", "p"] == pytest.approx(expected.p)
    assert cells.loc["no_comm", "delta"] == pytest.approx(-25 / 40)
    # Holm over the three comparisons of the table.
    raw = cells["p"].dropna().sort_values()
    assert cells.loc["no_comm", "p_holm"] == pytest.approx(min(1.0, raw.iloc[0] * 3))
    # whitenoise played q10..q39: paired on those 30 only; latent fails q30..q39 where whitenoise wins.
    white = stats.mcnemar_exact(np.ones(30), np.array([1] * 20 + [0] * 10))
    assert cells.loc["whitenoise", "p"] == pytest.approx(white.p)
    assert cells.loc["whitenoise", "delta"] == pytest.approx(10 / 30)
    wide = t.wide
    assert wide.loc["no_comm", "accuracy % probe/test"].endswith("n=40*")
    assert "[" in wide.loc["text", "accuracy % probe/test"] and not wide.loc["text", "accuracy % probe/test"].endswith("*")
    assert wide.loc["latent", "chance % probe/test"] == "25.0"
    ablations = report.tables(known_db)["ablations"].wide
    assert ablations.loc["no_comm", "Δ vs latent (pp)"] == "-62.5*"


def test_exports_write_every_format(known_db, tmp_path):
    written = report.write(known_db, tmp_path / "out", html=True)
    assert {"report.md", "report.json", "probe.csv", "probe.tex", "ablations.tex", "report.html"} <= set(written)
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    no_comm = next(c for c in data["probe"]["cells"] if c["row"] == "no_comm" and c["measure"] == "accuracy %")
    assert no_comm["n"] == 40 and no_comm["significant"] is True and 0 < no_comm["p_holm"] < 0.05
    assert no_comm["test"] == "exact McNemar" and no_comm["lo"] < no_comm["value"] < no_comm["hi"]
    tex = (tmp_path / "out" / "probe.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex and "no\\_comm" in tex
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| no_comm |" in md and "Holm" in md


def test_leaderboard_by_a_metrics_key_splits_columns(tmp_path):
    db = tmp_path / "r.duckdb"
    _write(db, "latent", [1, 1, 0, 1, 0, 0], levels=["Level 1", "Level 1", "Level 1", "Level 2", "Level 2",
                                                      "Level 10"])
    table = leaderboard(db, by="level")
    assert table.columns == ["probe/test/level=Level 1", "probe/test/level=Level 2", "probe/test/level=Level 10"]
    cells = table.rows[0][1:]
    assert [c.n for c in cells] == [3, 2, 1] and cells[0].value == pytest.approx(2 / 3)
    out = CliRunner().invoke(app, ["leaderboard", "--db", str(db), "--by", "level", "-f", "csv"])
    assert out.exit_code == 0 and "probe/test/level=Level 2" in out.output
    bad = CliRunner().invoke(app, ["leaderboard", "--db", str(db), "--by", "level; drop"])
    assert bad.exit_code != 0 and "--by" in bad.output


def test_pandas_api(known_db):
    runs = frames.runs_df(known_db)
    assert set(runs["method"]) == {"latent", "no_comm", "text", "whitenoise"} and "seed" in runs
    samples = frames.samples_df(known_db)
    assert len(samples) == 150 and samples.groupby("method")["success"].mean()["latent"] == pytest.approx(0.75)
    assert (samples["metrics.chance"] == 0.25).all()
    timings = frames.timings_df(known_db)
    assert set(timings["stage"]) == {"receiver", "wall"} and len(timings) == 2 * 150


# -- the whole report on real runs, rendered in a browser ------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def render(page, tmp_path):
    """Load a page in headless Chromium: (console messages, DOM, screenshot pixels)."""
    import matplotlib.image

    shot = tmp_path / "shot.png"
    args = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--enable-logging=stderr", "--v=0", "--window-size=1300,1600"]
    console = subprocess.run([*args, f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True,
                             timeout=120).stderr
    dom = subprocess.run([*args, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    messages = [line for line in (console + dom.stderr).splitlines() if ":CONSOLE" in line]
    return messages, dom.stdout, matplotlib.image.imread(shot)


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (make setup installs Debian's chromium): "
                                              "the HTML report is not rendered")
def test_render_check_catches_a_broken_page(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text("<html><body><p>x</p><script>throw new Error('kaboom')</script></body></html>")
    messages, dom, _ = render(page, tmp_path)
    assert any("kaboom" in m for m in messages) and "<p>x</p>" in dom


TINY = ["--receiver", "tiny-llama", "--sender", "tiny-llama", "--max-new-tokens", "4", "--param", "plan_tokens=4",
        "--no-leaderboard"]


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (make setup installs Debian's chromium): "
                                              "the HTML report is not rendered")
def test_report_html_on_probe_alfworld_and_math_runs_renders(results_env, tmp_path):
    def run(*args):
        out = CliRunner().invoke(app, ["run", *args])
        assert out.exit_code == 0, out.output

    run("-m", "oracle,random", "-t", "alfworld", "--splits", "seen,unseen", "--limit", "2", "--no-leaderboard")
    run("-m", "text_zeroshot,no_comm_zeroshot", "-t", "math", "--limit", "3", *TINY)
    run("-m", "latent,no_comm,untrained_k", "-t", "probe", "--limit", "4", "--param", "n_train=4", "--param", "k=2",
        *TINY)
    out = CliRunner().invoke(app, ["report", "--html", "--out", str(tmp_path / "rep")])
    assert out.exit_code == 0, out.output
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert {"alfworld", "math", "probe", "latency", "efficiency"} <= set(data)
    alf_columns = {c["column"] for c in data["alfworld"]["cells"]}
    assert {"alfworld/seen", "alfworld/unseen"} <= alf_columns
    assert any(c["column"].startswith("math/") and "level=" in c["column"] for c in data["math"]["cells"])
    assert all(c["lo"] is not None for c in data["probe"]["cells"] if c["measure"] == "accuracy %")
    assert any(c["p"] is not None for c in data["probe"]["cells"])  # rows compared with latent
    messages, dom, pixels = render(tmp_path / "rep" / "report.html", tmp_path)
    assert messages == []  # no console errors (nor any other console output)
    for section in ("table-alfworld", "table-math", "table-probe", "table-latency", "plot-efficiency"):
        assert f'id="{section}"' in dom
    assert dom.count("<table") >= 5 and "<svg" in dom
    ink = (pixels[..., :3] < 0.9).any(axis=-1).mean()  # share of pixels that are not white
    assert 0.01 < ink < 0.6, ink


# -- the probe ladder ------------------------------------------------------------------------

def _write_rung(db, method, n_facts, n_options, outcomes, stated, seed=0, training_seed=None, status="complete",
                named=None, errors=None):
    """A probe run at one rung: ``outcomes`` 0/1 per sample, ``stated`` whether its plan states the fact,
    ``named`` whether its reply names an option (all, by default), ``errors`` which samples errored."""
    store = Store(db)
    run_key = f"{method}-{n_facts}-{n_options}-{seed}"
    spec = {"method": method, "seed": seed, "benchmark_params": {"n_facts": n_facts, "n_options": n_options},
            "method_params": {"plan_tokens": 16 * n_facts},
            "training": {"lr": 2e-5, "seed": seed if training_seed is None else training_seed}}
    with store.writer() as con:
        store.upsert_run(con, {"run_key": run_key, "method": method, "benchmark": "probe", "split": "test",
                               "seed": seed, "receiver_model": "m", "sender_model": "m", "status": status, "device": "cpu",
                               "spec": spec})
        store.insert_samples(con, [
            {"run_key": run_key, "sample_id": f"q{i}", "success": bool(ok), "score": float(ok), "steps": 1,
             "error": "boom" if errors and errors[i] else None,
             "metrics": {} if errors and errors[i] else {
                 "chance": 1 / n_options, "fact_in_plan": int(st), "fidelity": int(ok) if st else None,
                 "predicted": "red" if named is None or named[i] else None}}
            for i, (ok, st) in enumerate(zip(outcomes, stated, strict=True))])


def test_ladder_table_one_line_per_rung_and_configuration_with_fidelity_over_stated_samples(tmp_path):
    db = tmp_path / "r.duckdb"
    stated = [1] * 6 + [0] * 4
    _write_rung(db, "latent", 1, 4, [1] * 6 + [0] * 4, stated)
    _write_rung(db, "latent", 4, 8, [1, 1, 0, 0, 0, 0, 1, 0, 0, 0], stated)
    _write_rung(db, "text", 4, 8, [1, 1, 1, 1, 1, 0, 0, 0, 0, 0], stated)
    ladder = report.probe_ladder(db)
    # plan_tokens differs with the rung; the rung's fields leave the label, so latent is one name.
    assert set(ladder["row"]) == {"latent", "text"}
    line = ladder[(ladder["row"] == "latent") & (ladder["n_facts"] == 4)].iloc[0]
    assert (line["accuracy"], line["accuracy_n"]) == (0.3, 10)
    assert (line["fidelity"], line["fidelity_n"]) == (pytest.approx(2 / 6), 6)  # the stated samples only
    assert line["chance"] == 0.125 and line["fidelity_lo"] < 2 / 6 < line["fidelity_hi"]
    t = report.tables(db)
    assert "ladder" in t and len(t["ladder"].wide) == 3
    probe = t["probe"].cells
    fid = probe[probe["measure"] == "fidelity %"].set_index("row")["value"]
    assert fid.to_dict() == pytest.approx({"latent[plan_tokens=16, n_facts=1, n_options=4]": 1.0,
                                           "latent[plan_tokens=64, n_facts=4, n_options=8]": 2 / 6, "text": 5 / 6})
    written = report.write(db, tmp_path / "rep", html=True)
    assert "ladder.svg" in written and "<svg" in written["ladder.svg"].read_text()
    assert "id='plot-ladder'" in written["report.html"].read_text()


def test_ladder_and_probe_table_count_replies_that_name_no_option(tmp_path):
    # A silenced receiver: 6 of 8 replies name no option, so accuracy (1 of 9) falls below chance (1 of 4);
    # the errored sample has no reply and stays out of the share.
    db = tmp_path / "r.duckdb"
    _write_rung(db, "randomrot", 1, 4, [1, 0, 0, 0, 0, 0, 0, 0, 0], [1] * 9,
                named=[1, 1, 0, 0, 0, 0, 0, 0, 0], errors=[0] * 8 + [1])
    _write_rung(db, "latent", 1, 4, [1, 1, 1, 0], [1] * 4)
    ladder = report.probe_ladder(db).set_index("row")
    assert ladder.loc["randomrot", "no_option"] == pytest.approx(6 / 8)
    assert ladder.loc["randomrot", "no_option_n"] == 8 and ladder.loc["latent", "no_option"] == 0.0
    probe = report.tables(db)["probe"]
    named = probe.cells[probe.cells["measure"] == "no option named %"].set_index("row")["value"]
    assert named.to_dict() == pytest.approx({"randomrot": 6 / 8, "latent": 0.0})
    assert any("no option named" in note for note in probe.notes)


def test_ladder_leaves_out_an_interrupted_run(tmp_path):
    db = tmp_path / "r.duckdb"
    _write_rung(db, "latent", 2, 4, [1, 1, 1, 0], [1, 1, 1, 1])
    _write_rung(db, "latent", 2, 8, [1, 1], [1, 1], status="interrupted")  # stopped after two samples
    ladder = report.probe_ladder(db)
    assert list(zip(ladder["n_facts"], ladder["n_options"], ladder["accuracy_n"])) == [(2, 4, 4)]


def test_seeds_that_train_their_own_receivers_pool_into_one_row(tmp_path):
    db = tmp_path / "r.duckdb"
    for seed in (0, 1, 2):  # training.seed follows the run's seed
        _write_rung(db, "latent", 1, 4, [1, 0, 1, 0], [1, 1, 1, 1], seed=seed)
    table = leaderboard(db, benchmarks=["probe"])
    assert [r[0] for r in table.rows] == ["latent"] and table.rows[0][1].seeds == 3
