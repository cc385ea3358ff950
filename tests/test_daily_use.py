"""A researcher's day, as the README walks it: a grid file with three methods on two tasks, its
dry run, the run with progress, `runs`, `show` of an ALFWorld episode and the leaderboard of
one tag. Tiny random models; every check parses what the command printed."""

import csv
import io
import json
import re

import pytest
from typer.testing import CliRunner

pytest.importorskip("alfworld")

from interlat_bench.harness.cli import app  # noqa: E402

GRID = """\
methods: [latent, text, no_comm]
tasks: [math, alfworld]
splits: [math500, seen]
sender: tiny-llama
receiver: tiny-llama
limit: 1
max_steps: 2
max_new_tokens: 6
tags: [first-try]
params:
  n_train: 2
  plan_tokens: 6
"""
PROGRESS = re.compile(r"^(collect|train|evaluate) (.+): (\d+)/(\d+) \(([\d.]+)/s, \d+ s(?:, ~\d+ s left)?\)(.*)$")


def invoke(*args, ok=True):
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    """The grid file, run once for the module (private results and caches)."""
    root = tmp_path_factory.mktemp("day")
    mp = pytest.MonkeyPatch()
    from interlat_bench.harness.core.settings import models_dir

    mp.setenv("INTERLAT_MODELS", str(models_dir()))
    mp.setenv("INTERLAT_CACHE", str(root / "cache"))
    mp.setenv("INTERLAT_RESULTS", str(root / "results"))
    grid = root / "grid.yaml"
    grid.write_text(GRID)
    dry = invoke("run", "--grid", str(grid), "--dry-run")
    ran = invoke("run", "--grid", str(grid), "--no-leaderboard", "--log-file", str(root / "run.log"))
    yield {"root": root, "grid": grid, "dry": dry, "run": ran}
    mp.undo()


def test_dry_run_of_a_grid_file_lists_six_cells_and_what_trains_them(day):
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in day["dry"].output.splitlines()
            if line.count("│") > 5 and ("math/math500" in line or "alfworld/seen" in line)]
    assert sorted((r[0], r[2]) for r in rows) == sorted(
        (m, t) for m in ("latent", "text", "no_comm") for t in ("math/math500", "alfworld/seen"))
    assert all(r[4] == r[6] == "1" and r[5] == "0" for r in rows)  # samples, done, to compute
    assert {r[0]: r[7] for r in rows} == {"latent": "latent (slot)", "text": "text (slot)",
                                          "no_comm": "none (slot)"}
    assert "6 samples to compute in 6 cells" in day["dry"].output


def test_the_run_reports_progress_of_collection_training_and_evaluation_on_stderr(day):
    lines = [m.groups() for line in day["run"].stderr.splitlines() if (m := PROGRESS.match(line))]
    finished = [(stage, name) for stage, name, done, total, *_ in lines if done == total]
    evaluated = {name.split(" | ")[0] + "/" + name.split(" | ")[1] for stage, name in finished if stage == "evaluate"}
    assert evaluated == {f"{m}/{t}" for m in ("latent", "text", "no_comm") for t in ("math/math500", "alfworld/seen")}
    trained = [name for stage, name in finished if stage == "train"]
    assert sorted(trained) == sorted(["latent receiver", "text receiver", "no_comm (empty slot) receiver"] * 2)
    assert any(stage == "collect" for stage, _ in finished)
    assert all(float(rate) >= 0 for *_, rate, _ in lines)
    assert any("loss " in info for stage, _, _, _, _, info in lines if stage == "train")
    assert "6 runs, 6 samples computed, 0 errors" in day["run"].stdout
    assert not any(PROGRESS.match(line) for line in day["run"].stdout.splitlines())  # tables only on stdout
    logged = (day["root"] / "run.log").read_text()
    assert logged.count(" INFO interlat_bench: evaluate ") >= 6 and " DEBUG interlat_bench: " in logged


def test_runs_lists_the_grid_with_its_tag(day):
    rows = list(csv.DictReader(io.StringIO(invoke("runs", "-f", "csv", "--tag", "first-try").stdout)))
    assert len(rows) == 6
    assert {(r["configuration"], r["benchmark/split"]) for r in rows} == {
        (m, t) for m in ("latent", "text", "no_comm") for t in ("math/math500", "alfworld/seen")}
    assert all(r["status"] == "complete" and r["samples"] == "1" and r["tags"] == "first-try" for r in rows)
    # the same grid again with another tag: nothing to compute, the finished runs get the tag
    again = invoke("run", "--grid", str(day["grid"]), "--tag", "again", "--no-leaderboard", "-q")
    assert "0 samples computed" in again.stdout
    rows = list(csv.DictReader(io.StringIO(invoke("runs", "-f", "csv", "--tag", "again").stdout)))
    assert len(rows) == 6 and {r["tags"] for r in rows} == {"again,first-try"}


def test_show_prints_an_alfworld_episode(day):
    rows = list(csv.DictReader(io.StringIO(invoke("runs", "-f", "csv").stdout)))
    key = next(r["run key"] for r in rows if r["configuration"] == "latent" and r["benchmark/split"] == "alfworld/seen")
    sample = json.loads(invoke("sql", f"select sample_id, steps from samples where run_key = '{key}'", "-f",
                               "json").stdout)[0]
    out = invoke("show", key[:8], sample["sample_id"]).stdout
    assert out.startswith(f"latent | alfworld/seen | tiny-llama -> tiny-llama | run {key}")
    roles = re.findall(r"^\[(plan|user|assistant)\]$", out, flags=re.M)
    assert roles[:2] == ["plan", "user"] and roles.count("assistant") == sample["steps"] == 2
    assert "[slot: 6 latent rows]" in out


def test_leaderboard_filtered_by_tag(day):
    invoke("run", "-m", "no_comm_zeroshot", "-t", "probe", "--limit", "2", "--receiver", "tiny-llama",
           "--max-new-tokens", "6", "--tag", "second", "--no-leaderboard", "-q")
    first = json.loads(invoke("leaderboard", "--tag", "first-try", "-f", "json").stdout)
    assert {(c["method"], c["column"], c["n"]) for c in first["cells"]} == {
        (m, t, 1) for m in ("latent", "text", "no_comm") for t in ("math/math500", "alfworld/seen")}
    second = json.loads(invoke("leaderboard", "--tag", "second", "-f", "json").stdout)
    assert [(c["method"], c["n"]) for c in second["cells"]] == [("no_comm_zeroshot", 2)]
    both = json.loads(invoke("leaderboard", "--tag", "second", "--tag", "first-try", "-f", "json").stdout)
    assert len(both["cells"]) == 7
    bad = invoke("leaderboard", "--tag", "frist-try", ok=False)
    assert bad.exit_code != 0 and "did you mean 'first-try'" in bad.output


def test_quiet_prints_no_progress_and_the_log_file_still_gets_it(day, tmp_path):
    log = tmp_path / "quiet.log"
    result = invoke("run", "-m", "no_comm_zeroshot", "-t", "probe", "--limit", "1", "--seeds", "5", "--receiver",
                    "tiny-llama", "--max-new-tokens", "6", "-q", "--no-leaderboard", "--log-file", str(log))
    assert result.stderr == "" and "1 runs, 1 samples computed" in result.stdout
    assert "evaluate no_comm_zeroshot | probe/test | tiny-llama | seed 5: 1/1" in log.read_text()


def test_progress_bars_on_a_terminal_show_count_rate_time_left_and_loss():
    from rich.console import Console

    from interlat_bench.harness import terminal
    from interlat_bench.harness.core import progress

    screen = io.StringIO()
    terminal.setup(Console(file=screen, force_terminal=True, width=160))
    try:
        with progress.track("train latent receiver", 3) as stage:
            for loss in (0.9, 0.5, 0.25):
                stage.advance(info=f"loss {loss}")
    finally:
        terminal.setup(Console(file=io.StringIO()), quiet=True)
    final = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue()).split("\r")[-1]
    assert "train latent receiver" in final and "3/3" in final and "loss 0.25" in final
    assert re.search(r"[\d.]+/s", final) and "left" in final


def test_runs_into_a_pipe_prints_every_cell_whole(day):
    """`runs | cat`: off a terminal rich would fit 80 columns and cut cells to "conf…"."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    piped = subprocess.run([str(Path(sys.executable).parent / "interlat-bench"), "runs"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0, piped.stderr
    keys = [r["run key"] for r in csv.DictReader(io.StringIO(invoke("runs", "-f", "csv").stdout))]
    assert len(keys) >= 6 and all(key in piped.stdout for key in keys)
    assert "configuration" in piped.stdout and "benchmark/split" in piped.stdout and "alfworld/seen" in piped.stdout
    assert "…" not in piped.stdout


def test_show_with_a_run_key_alone_lists_the_runs_samples(day):
    rows = list(csv.DictReader(io.StringIO(invoke("runs", "-f", "csv").stdout)))
    key = next(r["run key"] for r in rows if r["configuration"] == "text" and r["benchmark/split"] == "math/math500")
    ids = [s["sample_id"] for s in json.loads(invoke("sql", f"select sample_id from samples where run_key = '{key}'",
                                                    "-f", "json").stdout)]
    out = invoke("show", key[:8]).stdout
    assert out.startswith(f"text | math/math500 | run {key}: {len(ids)} samples")
    assert ids and all(sid in out for sid in ids)
    one = invoke("show", key[:8], ids[0]).stdout  # what the listing says to run next
    assert f"sample {ids[0]}:" in one
    assert "expected one run, found none" in invoke("show", "zzzz", ok=False).output


def test_after_a_run_each_method_is_set_against_no_comm_and_the_grid_note_is_printed(day):
    grid = day["root"] / "noted.yaml"
    grid.write_text(GRID + "note: |\n  Read this last.\n")
    out = invoke("run", "--grid", str(grid), "-q").stdout  # the same cells: nothing to compute
    assert "0 samples computed" in out
    found = re.findall(r"^(math/math500|alfworld/seen) seed 0: (latent|text) ([\d.]+)% \[[\d.]+, [\d.]+\] n=1 "
                       r"vs no_comm [\d.]+% \[[\d.]+, [\d.]+\] n=1: (.+)$", out, flags=re.M)
    assert sorted((t, m) for t, m, *_ in found) == sorted(
        (t, m) for t in ("math/math500", "alfworld/seen") for m in ("latent", "text"))
    assert all(said == "not told apart from no_comm (intervals overlap)" for *_, said in found)  # n = 1
    assert out.rstrip().endswith("Read this last.")
