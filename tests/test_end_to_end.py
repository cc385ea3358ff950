"""Whole runs through the CLI on tiny random models: records, resume, reuse of artifacts."""

import duckdb
import pytest
from typer.testing import CliRunner

from interlat_bench.harness.cli import app

runner = CliRunner()
TINY = ["--receiver", "tiny-llama", "--sender", "tiny-llama", "--max-new-tokens", "6",
        "--param", "plan_tokens=6", "--no-leaderboard"]


def counts(db):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return dict(con.execute(
            "select method, count(*) from samples join runs using (run_key) group by 1").fetchall())
    finally:
        con.close()


def invoke(*args):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_zero_shot_grid_records_and_resumes(results_env):
    out = invoke("run", "-m", "text_zeroshot,no_comm_zeroshot", "-t", "math", "--limit", "3", *TINY)
    assert "6 samples computed" in out
    assert counts(results_env) == {"text_zeroshot": 3, "no_comm_zeroshot": 3}
    out = invoke("run", "-m", "text_zeroshot,no_comm_zeroshot", "-t", "math", "--limit", "3", *TINY)
    assert "0 samples computed" in out
    out = invoke("run", "-m", "text_zeroshot,no_comm_zeroshot", "-t", "math", "--limit", "5", *TINY)
    assert "4 samples computed" in out
    assert counts(results_env) == {"text_zeroshot": 5, "no_comm_zeroshot": 5}
    con = duckdb.connect(str(results_env), read_only=True)
    stages = {r[0] for r in con.execute("select distinct stage from timings").fetchall()}
    levels = con.execute("select count(*) from samples where metrics->>'level' is not null").fetchone()[0]
    con.close()
    assert {"receiver", "grading", "sender"} <= stages
    assert levels == 10
    out = invoke("leaderboard", "--format", "md")
    assert "text_zeroshot" in out and "n=5" in out


@pytest.mark.slow
def test_trained_methods_cross_family_train_once(results_env):
    args = ["run", "-m", "latent,text,no_comm", "-t", "math", "--limit", "2", "--receiver", "tiny-qwen",
            "--sender", "tiny-llama", "--max-new-tokens", "6", "--param", "plan_tokens=6",
            "--param", "n_train=4", "--no-leaderboard"]
    out = invoke(*args)
    assert out.count(" receiver on 4 conversations") == 3, out
    assert counts(results_env) == {"latent": 2, "text": 2, "no_comm": 2}
    # Same grid, one more sample: checkpoints and messages are reused, nothing is retrained.
    args[args.index("--limit") + 1] = "3"
    out = invoke(*args)
    assert " receiver on 4 conversations" not in out
    assert out.count("reusing trained") == 3
    assert counts(results_env) == {"latent": 3, "text": 3, "no_comm": 3}
