"""Leaderboard aggregation, intervals and renderers."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math

import pytest
from rich.console import Console

from interlat_bench.harness.core.errors import UserError
from interlat_bench.harness.core.runspec import DecodingSpec, RunSpec
from interlat_bench.results.leaderboard import (
    Cell,
    Table,
    format_cell,
    leaderboard,
    mean_interval,
    render_csv,
    render_markdown,
    render_rich,
    t975,
    wilson,
)
from interlat_bench.results.store import Store


def test_wilson_known_values():
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    assert wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson(11, 10)


def test_t_quantiles_and_mean_interval():
    assert t975(1) == pytest.approx(12.706, abs=1e-3)
    assert t975(30) == pytest.approx(2.042, abs=1e-3)
    assert t975(40) == pytest.approx(2.021, abs=2e-3)
    assert t975(120) == pytest.approx(1.980, abs=2e-3)
    assert t975(10**6) == pytest.approx(1.96, abs=1e-3)
    lo, hi = mean_interval(10.0, 2.0, 5)  # t(4) = 2.776
    assert (lo, hi) == pytest.approx((10 - 2.776 * 2 / math.sqrt(5), 10 + 2.776 * 2 / math.sqrt(5)))
    assert mean_interval(3.0, None, 1) == (None, None)


def _add_run(
    con,
    store,
    run_key,
    method,
    benchmark,
    split,
    seed,
    successes,
    *,
    receiver="llama",
    sender="qwen",
    steps=None,
    errors=0,
    metrics=None,
    spec=None,
):
    store.upsert_run(
        con,
        {
            "run_key": run_key,
            "method": method,
            "benchmark": benchmark,
            "split": split,
            "seed": seed,
            "receiver_model": receiver,
            "sender_model": sender,
            "status": "done",
            "spec": spec,
        },
    )
    rows = [
        {
            "run_key": run_key,
            "sample_id": f"s{i}",
            "success": bool(ok),
            "score": float(ok),
            "steps": None if steps is None else steps[i],
            "metrics": None if metrics is None else metrics[i],
        }
        for i, ok in enumerate(successes)
    ]
    rows += [{"run_key": run_key, "sample_id": f"err{i}", "error": "boom"} for i in range(errors)]
    store.insert_samples(con, rows)


# What the grid writes per benchmark when the user sets nothing: (benchmark_params, max_new_tokens).
_BENCH_DEFAULTS = {"math": ({}, 320), "alfworld": ({"max_steps": 20}, 48)}


def _spec(method, benchmark, split, seed=0, *, receiver="llama", sender="qwen", method_params=None,
          benchmark_params=None, max_new_tokens=None, **extra):
    """A real ``runs.spec`` (RunSpec.to_json()) with the benchmark's defaults; ``extra`` adds keys."""
    params, tokens = _BENCH_DEFAULTS[benchmark]
    spec = RunSpec.make(
        method=method, benchmark=benchmark, split=split, receiver_model=receiver, sender_model=sender, seed=seed,
        method_params=method_params or {}, benchmark_params=params if benchmark_params is None else benchmark_params,
        decoding=DecodingSpec(max_new_tokens=max_new_tokens or tokens), limit=10,
    ).to_json()
    spec.update(extra)
    return spec


def _add(con, store, method, benchmark, split, seed, successes, *, spec_extra=None, **kw):
    """_add_run with a real spec (``method_params``, ``benchmark_params``, ``max_new_tokens`` go to
    it, ``spec_extra`` adds keys); the run key is a hash of the spec, as the runner's is."""
    spec_kw = {k: kw.pop(k) for k in ("method_params", "benchmark_params", "max_new_tokens") if k in kw}
    spec = _spec(method, benchmark, split, seed, receiver=kw.get("receiver", "llama"),
                 sender=kw.get("sender", "qwen"), **spec_kw, **(spec_extra or {}))
    run_key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    _add_run(con, store, run_key, method, benchmark, split, seed, successes, spec=spec, **kw)
    return spec


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "results.duckdb"
    store = Store(path)
    with store.writer() as con:
        # Runs without a spec (older databases): known by method and models only.
        # latent on math/test, seeds replaying samples s0..s5: seed 0 plays s0-s3 (3/4) and errors
        # on err0-err2; seed 1 plays s0-s5 (3/6), solving s3 instead of s2. Per sample: s0, s1 1;
        # s2, s3 1/2; s4, s5 0; err0-err2 0 (failures).
        _add_run(
            con,
            store,
            "a0",
            "latent",
            "math",
            "test",
            0,
            [1, 1, 1, 0],
            steps=[2, 4, 6, 8],
            errors=3,
            metrics=[{"tokens": 10}, {"tokens": 20}, {"tokens": 30}, {"tokens": None}],
        )
        _add_run(con, store, "a1", "latent", "math", "test", 1, [1, 1, 0, 1, 0, 0], steps=[1, 1, 1, 1, 1, 1])
        # text on math/test: 2/8; on alfworld/valid_seen: 5/5
        _add_run(con, store, "b0", "text", "math", "test", 0, [1, 1, 0, 0, 0, 0, 0, 0])
        _add_run(con, store, "b1", "text", "alfworld", "valid_seen", 0, [1] * 5)
        # a run without samples does not create a cell
        _add_run(con, store, "c0", "none", "math", "test", 0, [])
    return path


def _cells(table):
    return {
        (row[0], col): cell for row in table.rows for col, cell in zip(table.columns, row[1:], strict=True)
    }


def test_leaderboard_averages_seeds_per_sample_and_pivots(db):
    table = leaderboard(db)
    assert table.row_header == "method"  # sender/receiver do not vary
    assert table.columns == ["alfworld/valid_seen", "math/test"]
    assert [row[0] for row in table.rows] == ["latent", "text"]
    cells = _cells(table)
    latent = cells[("latent", "math/test")]
    # 9 distinct samples (not 10 + 3 episodes); per-sample means [1, 1, .5, .5, 0, 0, 0, 0, 0]:
    # mean 1/3, sd sqrt(1.5 / 8), t(8) = 2.306 -> 1/3 +- 2.306 * sd / 3.
    assert latent.n == 9 and latent.value == pytest.approx(1 / 3)
    assert latent.errors == 3 and latent.seeds == 2
    half = 2.306 * math.sqrt(1.5 / 8) / 3
    assert (latent.lo, latent.hi) == pytest.approx((1 / 3 - half, 1 / 3 + half), abs=1e-4)
    text = cells[("text", "math/test")]
    assert text.n == 8 and text.value == pytest.approx(0.25)
    assert cells[("text", "alfworld/valid_seen")] == Cell(1.0, 5, *wilson(5, 5))
    assert cells[("latent", "alfworld/valid_seen")] == ""  # missing
    assert table.percent
    assert "seeds 0,1 averaged per sample" in table.title and "errors count as failures" in table.title


def test_leaderboard_filters_keep_their_order(db):
    table = leaderboard(db, methods=["text", "latent"], benchmarks=["math"])
    assert [row[0] for row in table.rows] == ["text", "latent"]
    assert table.columns == ["math/test"]
    assert leaderboard(db, splits=["valid_seen"]).columns == ["alfworld/valid_seen"]
    assert leaderboard(db, methods=["nothing"]).rows == []


def test_leaderboard_steps_and_json_metrics(db):
    table = leaderboard(db, metric="steps")
    steps = _cells(table)[("latent", "math/test")]
    # per-sample means over seeds 0 and 1: s0-s3 (2+1)/2 .. (8+1)/2, s4 and s5 1; errored
    # samples are left out: these runs have no spec, hence no step cap.
    values = [1.5, 2.5, 3.5, 4.5, 1, 1]
    mean = sum(values) / 6
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 5)
    assert steps.n == 6 and steps.value == pytest.approx(mean)
    assert (steps.lo, steps.hi) == pytest.approx(mean_interval(mean, sd, 6))
    assert steps.errors == 3
    assert not table.percent
    assert [row[0] for row in table.rows] == ["latent"]  # text has no steps recorded

    tokens = _cells(leaderboard(db, metric="tokens"))[("latent", "math/test")]
    assert tokens.n == 3 and tokens.value == pytest.approx(20.0)
    with pytest.raises(UserError):
        leaderboard(db, metric="x; drop table samples")


def test_leaderboard_splits_rows_by_receiver_when_it_varies(tmp_path):
    path = tmp_path / "r.duckdb"
    store = Store(path)
    with store.writer() as con:
        _add_run(con, store, "a", "latent", "math", "test", 0, [1, 0], receiver="llama")
        _add_run(con, store, "b", "latent", "math", "test", 0, [1, 1, 1], receiver="qwen")
    table = leaderboard(path)
    assert table.row_header == "method / receiver"
    cells = _cells(table)
    assert cells[("latent / llama", "math/test")].n == 2
    assert cells[("latent / qwen", "math/test")].value == pytest.approx(1.0)


def test_runs_without_a_model_do_not_make_models_vary(tmp_path):
    path = tmp_path / "r.duckdb"
    store = Store(path)
    with store.writer() as con:
        _add_run(con, store, "a", "latent", "alfworld", "seen", 0, [0, 1], receiver="llama", sender="qwen")
        _add_run(con, store, "b", "no_comm", "alfworld", "seen", 0, [0, 0], receiver="llama", sender=None)
        _add_run(con, store, "c", "oracle", "alfworld", "seen", 0, [1, 1], receiver=None, sender=None)
    table = leaderboard(path)
    assert table.row_header == "method"
    assert [row[0] for row in table.rows] == ["latent", "no_comm", "oracle"]


def _labels(table):
    return [row[0] for row in table.rows]


def test_runs_differing_in_a_method_param_are_two_rows_named_by_it(tmp_path):
    path = tmp_path / "r.duckdb"
    store = Store(path)
    with store.writer() as con:
        common = {"preset": "quick", "n_train": 8}
        _add(con, store, "latent", "math", "test", 0, [1, 1, 1, 1], method_params={**common, "curriculum": "pure"})
        _add(con, store, "latent", "math", "test", 0, [0, 0, 0, 1], method_params={**common, "curriculum": "schedule"})
        _add(con, store, "text", "math", "test", 0, [1, 0], method_params=common)
        # a benchmark parameter on the same benchmark/split splits rows as well
        for steps, ok in ((50, [1, 0, 0]), (200, [1, 1, 1])):
            _add(con, store, "oracle", "alfworld", "seen", 0, ok, receiver=None, sender=None,
                 benchmark_params={"max_steps": steps})
    table = leaderboard(path)
    assert table.row_header == "method"
    assert _labels(table) == ["latent[curriculum=pure]", "latent[curriculum=schedule]", "oracle[max_steps=50]",
                              "oracle[max_steps=200]", "text"]
    cells = _cells(table)
    assert cells[("latent[curriculum=pure]", "math/test")] == Cell(1.0, 4, *wilson(4, 4))
    assert cells[("latent[curriculum=schedule]", "math/test")] == Cell(0.25, 4, *wilson(1, 4))
    assert cells[("oracle[max_steps=50]", "alfworld/seen")] == Cell(1 / 3, 3, *wilson(1, 3))
    assert cells[("oracle[max_steps=200]", "alfworld/seen")] == Cell(1.0, 3, *wilson(3, 3))
    assert cells[("latent[curriculum=pure]", "alfworld/seen")] == ""
    console = Console(record=True, width=200, color_system=None)
    console.print(render_rich(table))
    assert "latent[curriculum=schedule]" in console.export_text()  # brackets are not rich markup


def test_one_configuration_on_two_benchmarks_is_one_row(tmp_path):
    path = tmp_path / "r.duckdb"
    store = Store(path)
    with store.writer() as con:
        for curriculum, math_ok, alf_ok in (("pure", [1, 1, 0], [1, 0]), ("schedule", [0, 0, 0], [1, 1])):
            # math: benchmark_params {} and 320 reply tokens; alfworld: max_steps 20 and 48 tokens
            _add(con, store, "latent", "math", "test", 0, math_ok, method_params={"curriculum": curriculum})
            _add(con, store, "latent", "alfworld", "seen", 0, alf_ok, method_params={"curriculum": curriculum})
        _add(con, store, "text", "math", "test", 0, [1, 0, 0, 0])
        _add(con, store, "text", "alfworld", "seen", 0, [0, 0], spec_extra={"data": "alfworld-fingerprint"})
    table = leaderboard(path)
    assert table.columns == ["alfworld/seen", "math/test"]
    assert _labels(table) == ["latent[curriculum=pure]", "latent[curriculum=schedule]", "text"]
    cells = _cells(table)
    assert cells[("latent[curriculum=pure]", "math/test")] == Cell(2 / 3, 3, *wilson(2, 3))
    assert cells[("latent[curriculum=pure]", "alfworld/seen")] == Cell(0.5, 2, *wilson(1, 2))
    assert cells[("latent[curriculum=schedule]", "math/test")] == Cell(0.0, 3, *wilson(0, 3))
    assert cells[("latent[curriculum=schedule]", "alfworld/seen")] == Cell(1.0, 2, *wilson(2, 2))
    assert cells[("text", "math/test")].value == pytest.approx(0.25)
    assert cells[("text", "alfworld/seen")].value == 0.0


def test_a_per_benchmark_field_that_varies_on_one_benchmark_splits_rows(tmp_path):
    """text on alfworld with max_steps 20 and 50, on math once: two configurations, both of
    which ran the same math run (max_steps does not exist there), so both rows show it."""
    path = tmp_path / "r.duckdb"
    store = Store(path)
    with store.writer() as con:
        _add(con, store, "text", "alfworld", "seen", 0, [0, 0], benchmark_params={"max_steps": 20})
        _add(con, store, "text", "alfworld", "seen", 0, [1, 1], benchmark_params={"max_steps": 50})
        _add(con, store, "text", "math", "test", 0, [1, 0, 0, 0])
        # max_new_tokens differs on both benchmarks: the label says where
        _add(con, store, "no_comm", "alfworld", "seen", 0, [0, 1], max_new_tokens=48)
        _add(con, store, "no_comm", "alfworld", "seen", 0, [1, 1], max_new_tokens=100)
        _add(con, store, "no_comm", "math", "test", 0, [0], max_new_tokens=100)
        _add(con, store, "no_comm", "math", "test", 0, [1], max_new_tokens=320)
    table = leaderboard(path)
    assert _labels(table) == [
        "no_comm[alfworld.max_new_tokens=48, math.max_new_tokens=100]",
        "no_comm[alfworld.max_new_tokens=48, math.max_new_tokens=320]",
        "no_comm[alfworld.max_new_tokens=100, math.max_new_tokens=100]",
        "no_comm[alfworld.max_new_tokens=100, math.max_new_tokens=320]",
        "text[max_steps=20]",
        "text[max_steps=50]",
    ]
    cells = _cells(table)
    assert cells[("text[max_steps=20]", "alfworld/seen")].value == 0.0
    assert cells[("text[max_steps=50]", "alfworld/seen")].value == 1.0
    math_cell = Cell(0.25, 4, *wilson(1, 4))
    assert cells[("text[max_steps=20]", "math/test")] == math_cell == cells[("text[max_steps=50]", "math/test")]


def test_unknown_spec_keys_split_rows_but_data_and_limit_do_not(tmp_path):
    path = tmp_path / "r.duckdb"
    store = Store(path)
    with store.writer() as con:
        _add(con, store, "text", "math", "test", 0, [1, 1], spec_extra={"data": "a1", "limit": 2})
        _add(con, store, "text", "math", "train", 0, [0, 0], spec_extra={"data": "b2", "limit": 5})
        _add(con, store, "text", "math", "test", 0, [0, 0], spec_extra={"prompt": "v2"})
    table = leaderboard(path)
    assert table.columns == ["math/test", "math/train"]
    assert _labels(table) == ["text[prompt=unset]", "text[prompt=v2]"]
    cells = _cells(table)
    assert cells[("text[prompt=unset]", "math/test")].value == 1.0
    assert cells[("text[prompt=unset]", "math/train")].value == 0.0
    assert cells[("text[prompt=v2]", "math/test")].value == 0.0
    assert cells[("text[prompt=v2]", "math/train")] == ""


def test_seeds_replaying_samples_count_samples_once_and_cluster_the_interval(tmp_path):
    path = tmp_path / "r.duckdb"
    store = Store(path)
    outcomes = {
        0: [1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
        1: [1, 1, 1, 1, 0, 1, 0, 0, 0, 0],
        2: [1, 1, 1, 0, 0, 0, 1, 0, 0, 0],
    }
    with store.writer() as con:
        for seed, ok in outcomes.items():
            _add(con, store, "latent", "math", "test", seed, ok)
        _add(con, store, "text", "math", "test", 0, [1, 1, 0, 0])
    table = leaderboard(path)
    latent = _cells(table)[("latent", "math/test")]
    # Per-sample means: s0-s2 1, s3 2/3, s4-s6 1/3, s7-s9 0; mean 14/30 = 7/15.
    # Squared deviations sum to (3*64 + 9 + 3*4 + 3*49)/225 = 1.6; sd = sqrt(1.6/9) = 0.42164;
    # t(9) = 2.262: half-width 2.262 * 0.42164 / sqrt(10) = 0.30160.
    assert latent.n == 10 and latent.seeds == 3
    assert latent.value == pytest.approx(7 / 15)
    assert (latent.lo, latent.hi) == pytest.approx((7 / 15 - 0.30160, 7 / 15 + 0.30160), abs=1e-4)
    assert (latent.lo, latent.hi) != pytest.approx(wilson(14, 30), abs=1e-3)  # not 30 independent trials
    # a one-seed cell keeps the Wilson interval over its samples
    assert _cells(table)[("text", "math/test")] == Cell(0.5, 4, *wilson(2, 4))
    assert "seeds 0,1,2 averaged per sample" in table.title
    assert "1 seed" in leaderboard(path, methods=["text"]).title


def test_errored_samples_are_failures_and_counted(tmp_path):
    path = tmp_path / "r.duckdb"
    store = Store(path)
    with store.writer() as con:
        # alfworld (cap 20): one success in 5 steps, one failure at the cap, one error
        _add(con, store, "text", "alfworld", "seen", 0, [1, 0], steps=[5, 20], errors=1)
        _add(con, store, "oracle", "alfworld", "seen", 0, [1], steps=[30], errors=1, receiver=None, sender=None,
             benchmark_params={"max_steps": 200})
        # math has no step cap: its errors count for success, not for steps
        _add(con, store, "text", "math", "test", 0, [1, 1, 0], steps=[1, 1, 1], errors=2)
    success = _cells(leaderboard(path))
    assert success[("text", "alfworld/seen")] == Cell(1 / 3, 3, *wilson(1, 3), errors=1)
    assert success[("text", "math/test")] == Cell(0.4, 5, *wilson(2, 5), errors=2)
    assert success[("oracle", "alfworld/seen")] == Cell(0.5, 2, *wilson(1, 2), errors=1)
    assert _cells(leaderboard(path, metric="score"))[("text", "math/test")].value == pytest.approx(0.4)

    steps = _cells(leaderboard(path, metric="steps"))
    assert steps[("text", "alfworld/seen")].value == pytest.approx((5 + 20 + 20) / 3)
    assert steps[("text", "alfworld/seen")].n == 3 and steps[("text", "alfworld/seen")].errors == 1
    assert steps[("oracle", "alfworld/seen")].value == pytest.approx((30 + 200) / 2)
    assert steps[("text", "math/test")].n == 3 and steps[("text", "math/test")].value == 1.0
    steps_success = _cells(leaderboard(path, metric="steps_success"))[("text", "alfworld/seen")]
    assert steps_success.n == 1 and steps_success.value == 5.0

    table = leaderboard(path, benchmarks=["math"])
    assert "err=2" in format_cell(_cells(table)[("text", "math/test")], True)
    assert "| text | 40.0 [11.8, 76.9] n=5 err=2 |" in render_markdown(table)
    assert [r["errors"] for r in csv.DictReader(io.StringIO(render_csv(table)))] == ["2"]
    assert "errors count as failures" in table.title


def test_leaderboard_on_missing_database_is_empty(tmp_path):
    table = leaderboard(tmp_path / "none.duckdb")
    assert table.rows == [] and table.columns == []


@pytest.fixture
def small_table():
    return Table(
        title="success",
        row_header="method",
        columns=["math/test", "alfworld/valid_seen"],
        rows=[
            ["latent", Cell(0.6, 10, 0.3127, 0.8318), ""],
            ["text|v2", Cell(0.25, 8, 0.0714, 0.5907, errors=2), Cell(1.0, 5, 0.5655, 1.0)],
        ],
        percent=True,
    )


def test_render_markdown(small_table):
    md = render_markdown(small_table)
    lines = md.splitlines()
    assert lines[0] == "**success**"
    assert "| method | math/test | alfworld/valid_seen |" in lines
    assert "| latent | 60.0 [31.3, 83.2] n=10 | – |" in lines
    assert "| text\\|v2 | 25.0 [7.1, 59.1] n=8 err=2 | 100.0 [56.5, 100.0] n=5 |" in lines


def test_render_markdown_non_percent():
    table = Table(
        "steps",
        "method",
        ["math/test"],
        [["latent", Cell(12.345, 3, 10.0, 14.5)], ["x", Cell(5.0, 1, None, None)]],
    )
    md = render_markdown(table)
    assert "| latent | 12.35 [10.00, 14.50] n=3 |" in md
    assert "| x | 5.00 n=1 |" in md


def test_render_csv_is_tidy(small_table):
    text = render_csv(small_table)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["method"] for r in rows] == ["latent", "text|v2", "text|v2"]  # missing cell skipped
    assert rows[0] == {
        "method": "latent",
        "column": "math/test",
        "metric": "success",
        "value": "0.6",
        "n": "10",
        "lo": "0.3127",
        "hi": "0.8318",
        "errors": "0",
    }
    assert rows[1]["errors"] == "2"
    assert rows[2]["column"] == "alfworld/valid_seen" and rows[2]["value"] == "1"


def test_render_rich(small_table):
    console = Console(record=True, width=200, color_system=None)
    console.print(render_rich(small_table))
    out = console.export_text()
    assert "latent" in out and "alfworld/valid_seen" in out
    assert "60.0 [31.3, 83.2] n=10" in out and "60.0 [31.3, 83.2] n=10 err" not in out
    assert "25.0 [7.1, 59.1] n=8 err=2" in out
    assert "100.0 [56.5, 100.0] n=5" in out


def test_end_to_end_markdown_from_database(db):
    md = render_markdown(leaderboard(db))
    assert "| latent | – | 33.3 [0.0, 66.6] n=9 err=3 |" in md


def test_cli_says_why_a_table_is_empty(db):
    from typer.testing import CliRunner

    from interlat_bench.harness.cli import app

    out = CliRunner().invoke(app, ["leaderboard", "--db", str(db), "-m", "text", "--metric", "steps_success"])
    assert out.exit_code == 0 and out.output.strip() == "steps_success: no successful episode yet"
    out = CliRunner().invoke(app, ["leaderboard", "--db", str(db), "-m", "latent", "--metric", "steps_success"])
    assert "latent" in out.output and "no successful episode" not in out.output


def test_diagnostic_settings_are_named_in_every_label_that_has_them(tmp_path):
    path = tmp_path / "r.duckdb"
    store = Store(path)
    with store.writer() as con:
        _add(con, store, "latent", "alfworld", "seen", 0, [1, 0], benchmark_params={"max_steps": 20, "action": "rank"})
        _add(con, store, "text", "alfworld", "seen", 0, [0, 0], benchmark_params={"max_steps": 20, "action": "rank"})
        _add(con, store, "text", "alfworld", "unseen", 0, [0, 1], benchmark_params={"max_steps": 20, "action": "rank"})
        _add(con, store, "no_comm", "alfworld", "seen", 0, [0, 0],
             benchmark_params={"max_steps": 20, "action": "generate"})
    assert _labels(leaderboard(path)) == ["latent", "no_comm", "text"]  # nothing differs within a method
    marked = _labels(leaderboard(path, marks={"action": "rank"}))
    assert marked == ["latent[action=rank]", "no_comm", "text[action=rank]"]


def test_step_intervals_never_go_below_zero(tmp_path):
    store = Store(tmp_path / "r.duckdb")
    with store.writer() as con:
        _add_run(con, store, "k1", "oracle", "alfworld", "seen", 0, [1, 1], steps=[1, 19])
    cell = leaderboard(tmp_path / "r.duckdb", metric="steps_success").rows[0][1]
    assert cell.value == 10 and cell.lo == 0.0 and cell.hi > 19  # t-interval n=2: 10 -/+ 114


def test_seeds_that_replay_identical_episodes_are_counted_once_and_said_so(tmp_path):
    path = tmp_path / "r.duckdb"
    store = Store(path)
    with store.writer() as con:
        for seed in (0, 1, 2):  # greedy decoding, nothing drawn: every seed plays every sample alike
            _add(con, store, "no_comm", "math", "test", seed, [1, 1, 0, 0, 0])
    table = leaderboard(path)
    cell = _cells(table)[("no_comm", "math/test")]
    assert cell.n == 5 and cell.value == pytest.approx(0.4)
    assert (cell.lo, cell.hi) == pytest.approx(wilson(2, 5))  # 5 observations, not 15
    assert "seeds 0,1,2 gave identical outcomes on every sample" in table.title and "each sample counted once" in table.title
    assert "averaged" not in table.title
    with store.writer() as con:  # one seed that differs makes the seeds real replications again
        _add(con, store, "no_comm", "math", "test", 3, [1, 0, 1, 0, 0])
    table = leaderboard(path)
    assert "identical" not in table.title and "seeds 0,1,2,3 averaged per sample" in table.title


def test_unfinished_runs_are_left_out_until_completed_and_filters_by_tag_key_and_param(tmp_path):
    from interlat_bench.results.leaderboard import Filters
    from interlat_bench.results.store import add_tags

    path = tmp_path / "r.duckdb"
    store = Store(path)
    with store.writer() as con:
        _add(con, store, "latent", "math", "test", 0, [1, 1, 0, 0], method_params={"rho": 0.5})
        _add(con, store, "latent", "math", "test", 0, [1, 1, 1, 1], method_params={"rho": 0.0})
        _add(con, store, "text", "math", "test", 0, [1])  # killed after one sample
    keys = {}
    with store.reader() as con:
        for key, spec in con.execute("SELECT run_key, CAST(spec AS VARCHAR) FROM runs").fetchall():
            keys[json.loads(spec)["method"] + str(json.loads(spec)["method_params"].get("rho", ""))] = key
    with store.writer() as con:
        con.execute("UPDATE runs SET status = 'interrupted' WHERE run_key = ?", [keys["text"]])
    table = leaderboard(path)
    assert {m for m, _ in _cells(table)} == {"latent[rho=0.0]", "latent[rho=0.5]"}
    assert "1 unfinished run left out" in table.title
    shown = leaderboard(path, filters=Filters(unfinished=True))
    assert ("text", "math/test") in _cells(shown) and "unfinished" not in shown.title

    add_tags(store, [keys["latent0.5"]], ["paper"])
    tagged = leaderboard(path, filters=Filters(tags=["paper"]))
    assert list(_cells(tagged)) == [("latent", "math/test")] and _cells(tagged)[("latent", "math/test")].n == 4
    by_key = leaderboard(path, filters=Filters(run_keys=[keys["latent0.0"][:6]]))
    assert _cells(by_key)[("latent", "math/test")].value == 1.0
    by_param = leaderboard(path, filters=Filters(params={"rho": 0.5}))
    assert _cells(by_param)[("latent", "math/test")].value == 0.5
    assert not _cells(leaderboard(path, filters=Filters(params={"rho": 0.7})))


def test_versus_no_comm_counts_errors_as_failures_and_needs_both_intervals_apart(tmp_path):
    from interlat_bench.results.leaderboard import versus

    store = Store(tmp_path / "r.duckdb")
    with store.writer() as con:
        _add_run(con, store, "k_none", "no_comm", "probe", "test", 0, [1] * 5 + [0] * 35)
        _add_run(con, store, "k_lat", "latent", "probe", "test", 0, [1] * 36 + [0] * 2, errors=2)
        _add_run(con, store, "k_txt", "text", "probe", "test", 0, [1] * 9 + [0] * 31)
        _add_run(con, store, "k_low", "cross_task", "probe", "test", 0, [0] * 40)
    found = {v.label: v for v in versus(store.path, {"latent": "k_lat", "text": "k_txt", "no_comm": "k_none",
                                                     "cross_task": "k_low"}, "no_comm")}
    assert set(found) == {"latent", "text", "cross_task"}
    assert (found["latent"].k, found["latent"].n) == (36, 40)  # the 2 errors are failures
    assert found["latent"].interval == wilson(36, 40) and found["latent"].reference_interval == wilson(5, 40)
    assert found["latent"].verdict == "above"
    assert found["text"].verdict == "within"  # 22.5% vs 12.5%: the intervals overlap
    assert found["cross_task"].verdict == "within"  # 0% [0, 8.8] overlaps [5.5, 26.1]
