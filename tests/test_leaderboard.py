"""Leaderboard aggregation, intervals and renderers."""

from __future__ import annotations

import csv
import io
import math

import pytest
from rich.console import Console

from interlat_bench.harness.errors import UserError
from interlat_bench.results.leaderboard import (
    Cell,
    Table,
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
):
    store.upsert_run(
        con,
        {
            "run_key": run_key,
            "method": method,
            "benchmark": benchmark,
            "split": split,
            "seed": seed,
            "receiver": receiver,
            "sender": sender,
            "status": "done",
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


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "results.duckdb"
    store = Store(path)
    with store.writer() as con:
        # latent on math/test: seed 0 -> 3/4, seed 1 -> 3/6 (pooled 6/10), plus errored samples
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
        _add_run(con, store, "a1", "latent", "math", "test", 1, [1, 1, 1, 0, 0, 0], steps=[1, 1, 1, 1, 1, 1])
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


def test_leaderboard_pools_seeds_and_pivots(db):
    table = leaderboard(db)
    assert table.row_header == "method"  # sender/receiver do not vary
    assert table.columns == ["alfworld/valid_seen", "math/test"]
    assert [row[0] for row in table.rows] == ["latent", "text"]
    cells = _cells(table)
    latent = cells[("latent", "math/test")]
    assert latent.n == 10 and latent.value == pytest.approx(0.6)
    assert (latent.lo, latent.hi) == pytest.approx(wilson(6, 10))
    text = cells[("text", "math/test")]
    assert text.n == 8 and text.value == pytest.approx(0.25)
    assert cells[("text", "alfworld/valid_seen")] == Cell(1.0, 5, *wilson(5, 5))
    assert cells[("latent", "alfworld/valid_seen")] == ""  # missing
    assert table.percent


def test_leaderboard_filters_keep_their_order(db):
    table = leaderboard(db, methods=["text", "latent"], benchmarks=["math"])
    assert [row[0] for row in table.rows] == ["text", "latent"]
    assert table.columns == ["math/test"]
    assert leaderboard(db, splits=["valid_seen"]).columns == ["alfworld/valid_seen"]
    assert leaderboard(db, methods=["nothing"]).rows == []


def test_leaderboard_steps_and_json_metrics(db):
    table = leaderboard(db, metric="steps")
    steps = _cells(table)[("latent", "math/test")]
    values = [2, 4, 6, 8, 1, 1, 1, 1, 1, 1]
    mean = sum(values) / 10
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 9)
    assert steps.n == 10 and steps.value == pytest.approx(mean)
    assert (steps.lo, steps.hi) == pytest.approx(mean_interval(mean, sd, 10))
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
            ["text|v2", Cell(0.25, 8, 0.0714, 0.5907), Cell(1.0, 5, 0.5655, 1.0)],
        ],
        percent=True,
    )


def test_render_markdown(small_table):
    md = render_markdown(small_table)
    lines = md.splitlines()
    assert lines[0] == "**success**"
    assert "| method | math/test | alfworld/valid_seen |" in lines
    assert "| latent | 60.0 [31.3, 83.2] n=10 | – |" in lines
    assert "| text\\|v2 | 25.0 [7.1, 59.1] n=8 | 100.0 [56.5, 100.0] n=5 |" in lines


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
        "value": "0.6",
        "n": "10",
        "lo": "0.3127",
        "hi": "0.8318",
    }
    assert rows[2]["column"] == "alfworld/valid_seen" and rows[2]["value"] == "1.0"


def test_render_rich(small_table):
    console = Console(record=True, width=200, color_system=None)
    console.print(render_rich(small_table))
    out = console.export_text()
    assert "latent" in out and "alfworld/valid_seen" in out
    assert "60.0 [31.3, 83.2] n=10" in out
    assert "100.0 [56.5, 100.0] n=5" in out


def test_end_to_end_markdown_from_database(db):
    md = render_markdown(leaderboard(db))
    assert "| latent | – | 60.0 [31.3, 83.2] n=10 |" in md


def test_cli_says_why_a_table_is_empty(db):
    from typer.testing import CliRunner

    from interlat_bench.harness.cli import app

    out = CliRunner().invoke(app, ["leaderboard", "--db", str(db), "-m", "text", "--metric", "steps_success"])
    assert out.exit_code == 0 and out.output.strip() == "steps_success: no successful episode yet"
    out = CliRunner().invoke(app, ["leaderboard", "--db", str(db), "-m", "latent", "--metric", "steps_success"])
    assert "latent" in out.output and "no successful episode" not in out.output
