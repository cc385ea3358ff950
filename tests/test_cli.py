import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from interlat_bench.harness.cli import app

runner = CliRunner()


def test_help_does_not_import_torch():
    code = ("import sys\nfrom interlat_bench.harness.cli import app\n"
            "try:\n    app(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "assert 'torch' not in sys.modules, 'torch imported by --help'\n"
            "assert 'transformers' not in sys.modules\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


def test_unknown_method_suggests_and_exits_2(results_env):
    result = runner.invoke(app, ["run", "--methods", "lattent", "--tasks", "math"])
    assert result.exit_code == 2
    assert "did you mean 'latent'" in result.output
    assert not results_env.exists()  # nothing half-written


def test_unknown_task_and_split(results_env):
    result = runner.invoke(app, ["run", "--methods", "no_comm_zeroshot", "--tasks", "mathh"])
    assert result.exit_code == 2 and "did you mean 'math'" in result.output
    result = runner.invoke(app, ["run", "--methods", "no_comm_zeroshot", "--tasks", "math", "--splits", "valid"])
    assert result.exit_code == 1 and "no task has a split 'valid'" in result.output


def test_bad_param_and_seed(results_env):
    result = runner.invoke(app, ["run", "-m", "no_comm_zeroshot", "-t", "math", "--param", "nope=1"])
    assert result.exit_code == 1 and "--param nope" in result.output
    result = runner.invoke(app, ["run", "-m", "no_comm_zeroshot", "-t", "math", "--seeds", "a"])
    assert result.exit_code == 1 and "--seeds" in result.output


def test_missing_math_data(results_env, monkeypatch, tmp_path):
    monkeypatch.setenv("MATH_DATA", str(tmp_path / "nowhere"))
    result = runner.invoke(app, ["run", "-m", "no_comm_zeroshot", "-t", "math", "--receiver", "tiny-llama",
                                 "--limit", "1"])
    assert result.exit_code == 1 and "MATH_DATA" in result.output


def test_ls_lists_methods_benchmarks_models():
    result = runner.invoke(app, ["ls"])
    assert result.exit_code == 0
    for name in ("latent", "text", "no_comm", "text_zeroshot", "math", "smollm2-135m", "tiny-qwen"):
        assert name in result.output


def test_leaderboard_without_db(results_env):
    result = runner.invoke(app, ["leaderboard"])
    assert result.exit_code == 1 and "no results database" in result.output


def test_dry_run_lists_cells_and_writes_nothing(results_env):
    out = CliRunner().invoke(app, ["run", "-m", "truncate,no_comm", "-t", "probe", "--limit", "3",
                                   "--receiver", "tiny-llama", "--sender", "tiny-llama", "--dry-run"],
                             env={"COLUMNS": "220"})
    assert out.exit_code == 0, out.output
    rows = [line for line in out.output.splitlines() if "probe/test" in line]
    assert len(rows) == 4  # truncate's sweep (rho 0.9, 0.5, 0) and no_comm
    assert sorted(r.split("│")[2].strip() for r in rows if "truncate" in r) == ["rho=0.0", "rho=0.5", "rho=0.9"]
    assert all(r.split("│")[7].strip() == "3" for r in rows)  # samples to compute
    assert "12 samples to compute in 4 cells" in out.output
    assert not results_env.exists() and not (results_env.parent / "shards").exists()


GRID = """\
# three methods on two tasks
methods: [latent, text, no_comm]
tasks: [probe, math]
seeds: [0]
receiver: tiny-llama
sender: tiny-llama
limit: 2
params:
  plan_tokens: 4
  n_train: 4
"""


def test_grid_file_dry_run_and_command_line_overrides(tmp_path, results_env):
    import re

    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID)
    out = CliRunner().invoke(app, ["run", "--grid", str(grid), "--dry-run"])
    assert out.exit_code == 0, out.output
    assert "12 samples to compute in 6 cells" in out.output
    assert not results_env.exists()  # a dry run writes nothing
    out = CliRunner().invoke(app, ["run", "--grid", str(grid), "--dry-run", "--limit", "1", "-m", "latent"])
    assert "2 samples to compute in 2 cells" in out.output  # the command line wins over the file
    toml = tmp_path / "grid.toml"
    toml.write_text('methods = ["no_comm"]\ntasks = ["probe"]\nreceiver = "tiny-llama"\nlimit = 3\n'
                    '[settings]\nn_options = 8\n')
    out = CliRunner().invoke(app, ["run", "--grid", str(toml), "--dry-run"])
    assert out.exit_code == 0 and re.search(r"3 samples to compute in 1 cells", out.output), out.output
    for text, says in (("methods: [latent]\ntasks: [probe]\ncolour: red\n", "unknown key 'colour'"),
                       ("methods: [latent\n", "not valid YAML"), ("limit: many\nmethods: x\ntasks: y\n", "limit")):
        grid.write_text(text)
        bad = CliRunner().invoke(app, ["run", "--grid", str(grid), "--dry-run"])
        assert bad.exit_code != 0 and says in bad.output + bad.stderr and str(grid) in bad.output + bad.stderr


@pytest.mark.parametrize("name, samples, cells", [("demo.yaml", 512, 4), ("alfworld-informed.yaml", 420, 14)])
def test_shipped_grid_files_expand(name, samples, cells, results_env):
    """The grids the docs point to expand as they say (a dry run: nothing trained or played)."""
    grid = Path(__file__).resolve().parents[1] / "grids" / name
    out = CliRunner().invoke(app, ["run", "--grid", str(grid), "--dry-run"])
    assert out.exit_code == 0, out.output
    assert f"{samples} samples to compute in {cells} cells" in out.output
    assert not results_env.exists()


def test_ls_name_shows_parameters_with_defaults_and_sweeps_version_and_short_help():
    out = CliRunner().invoke(app, ["ls", "truncate"])
    assert out.exit_code == 0, out.output
    assert "part of the run key" in out.output
    rows = {line.split("│")[1].strip(): line for line in out.output.splitlines() if line.count("│") >= 3}
    assert "sweep [0.9, 0.5, 0.0]" in rows["rho"] and "a number from 0 to 1" in rows["rho"]
    assert "128" in rows["plan_tokens"] and "one of quick, cpu, paper" in rows["preset"]
    out = CliRunner().invoke(app, ["ls", "probe"])
    assert "splits: test (256)" in out.output and "n_options" in out.output
    listed = CliRunner().invoke(app, ["ls"], env={"COLUMNS": "200"}).output
    assert "math500 (500), test (5000)" in listed and "seen (140), unseen (134)" in listed  # shared data sizes
    bad = CliRunner().invoke(app, ["ls", "latnet"])
    assert bad.exit_code != 0 and "did you mean 'latent'" in bad.output + bad.stderr
    assert CliRunner().invoke(app, ["--version"]).output.startswith("interlat-bench ")
    assert "Usage" in CliRunner().invoke(app, ["run", "-h"]).output


def test_collect_and_train_take_benchmark_settings(results_env):
    """`collect` and `train` name a cell as `run` does, benchmark settings included: the probe's
    rung given by `--setting` is what the sender plans for."""
    from interlat_bench.benchmarks.probe import ProbeBenchmark
    from interlat_bench.collectors.messages import load_messages
    from interlat_bench.harness.core.settings import cache_dir

    result = runner.invoke(app, ["collect", "-t", "probe", "--split", "test", "--limit", "2", "--sender", "tiny-llama",
                                 "-s", "n_facts=3", "-p", "plan_tokens=4"])
    assert result.exit_code == 0, result.output
    key = result.output.split("in collection")[-1].strip()
    messages = load_messages(cache_dir() / "messages" / key)
    three = {s.id: s.task for s in ProbeBenchmark({"n_facts": 3}).samples("test", 2)}
    assert set(messages) == set(three) and all(t.count(" is in the ") == 3 for t in three.values())
    one = runner.invoke(app, ["collect", "-t", "probe", "--split", "test", "--limit", "2", "--sender", "tiny-llama",
                              "-p", "plan_tokens=4"])
    assert one.exit_code == 0 and one.output.split("in collection")[-1].strip() != key  # the one-fact probe's
    bad = runner.invoke(app, ["train", "-m", "no_comm", "-t", "probe", "--receiver", "tiny-llama", "-s", "n_facts=0"])
    assert bad.exit_code != 0 and "n_facts" in bad.output and "Traceback" not in bad.output
