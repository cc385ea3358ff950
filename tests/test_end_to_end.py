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


def test_a_run_that_finds_the_database_locked_waits_then_keeps_its_rows(results_env, monkeypatch):
    """Two runs sharing a results folder: when the other one holds the database as this one
    finishes, this one waits (saying so), keeps its rows in shards and exits 0; the next
    ingest loads them."""
    import subprocess
    import sys

    from interlat_bench.harness import runner

    monkeypatch.setattr(runner, "LOCK_WAIT_S", 1.0)
    holder = []

    def take_the_lock(record):  # the other run starts ingesting while this one plays its last sample
        if not holder:
            holder.append(subprocess.Popen(
                [sys.executable, "-c", f"import duckdb, time; c = duckdb.connect({str(results_env)!r}); "
                 "print('ready', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True))
            assert holder[0].stdout.readline().strip() == "ready"

    invoke("run", "-m", "text_zeroshot", "-t", "math", "--limit", "1", *TINY)  # creates the database
    lines = []
    try:
        from interlat_bench.harness.core.runspec import DecodingSpec
        from interlat_bench.harness.grid import expand

        specs = expand(methods_csv="no_comm_zeroshot", tasks_csv="math", receiver_model="tiny-llama",
                       sender_model="tiny-llama", limit=2, decoding=DecodingSpec(max_new_tokens=6))
        runner.run_grid(specs, results_env, log=lines.append, on_sample=take_the_lock)
    finally:
        for proc in holder:
            proc.kill()
            proc.wait(timeout=30)
            proc.stdout.close()
    said = "\n".join(lines)
    assert "is in use by" in said and "waiting up to 1 s" in said
    assert "results are kept in" in said and "interlat-bench ingest" in said
    out = invoke("ingest")
    assert "'samples': 2" in out
    assert counts(results_env) == {"text_zeroshot": 1, "no_comm_zeroshot": 2}


@pytest.mark.slow
def test_corrupt_cached_messages_and_checkpoints_are_detected_and_rebuilt(results_env):
    from interlat_bench.harness.core.settings import cache_dir

    args = ["run", "-m", "latent", "-t", "probe", "--limit", "2", "--param", "n_train=4", *TINY]
    invoke(*args)
    messages = list((cache_dir() / "messages").glob("*/dataset/messages.parquet"))
    weights = list((cache_dir() / "receivers").glob("*/receiver/model.safetensors"))
    assert messages and len(weights) == 1
    for path in [*messages, weights[0]]:
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # a torn write / bad disk
    # A new sample forces both to be read again.
    args[args.index("--limit") + 1] = "3"
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = result.stderr  # notes go to stderr
    # Read again: the training plans, the warm-up's further plans (the probe preset's
    # warmup_plans) and the checkpoint (the evaluation plans of 3 samples are a new collection;
    # the corrupt one of 2 samples is not read).
    corrupt = [line for line in out.splitlines() if line.startswith("corrupt cache entry")]
    assert len(corrupt) == 3, out
    assert all("/cache/messages/" in line for line in corrupt[:2]) and "/cache/receivers/" in corrupt[2]
    assert " receiver on 4 conversations" in out  # retrained, not reused
    assert counts(results_env) == {"latent": 3}
    assert len(list((cache_dir() / "receivers").glob("*.corrupt-*"))) == 1  # kept for inspection


def test_training_reports_progress_and_library_notices_stay_off_stdout(tmp_path):
    """stdout carries the run's own lines only (scripts parse it); training says how far it is."""
    import os
    import re
    import subprocess
    import sys

    env = {**os.environ, "INTERLAT_RESULTS": str(tmp_path / "results"), "INTERLAT_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "interlat_bench.harness.entry", "run", "-m", "no_comm", "-t", "probe",
                           "--limit", "1", "--param", "n_train=8", "--receiver", "tiny-llama", "--no-leaderboard"],
                          env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    # The last step's line: "N/N (rate, time)  loss" (N: the probe preset's steps for 8 conversations).
    assert re.search(r"^train no_comm \(empty slot\) receiver: (\d+)/\1 \([\d.]+/s, \d+ s\)  loss [\d.]+$",
                     proc.stderr, flags=re.M), proc.stderr
    for noise in ("[WARNING]", "real_accelerator", "{'loss'", "{'train_runtime'", "train ", "evaluate "):
        assert noise not in proc.stdout, proc.stdout
    assert "real_accelerator" not in proc.stderr  # library notices: with -v only


def test_runs_lists_marks_killed_runs_interrupted_and_prunes(results_env):
    import csv
    import io

    from interlat_bench.results.shards import ShardWriter

    invoke("run", "-m", "text_zeroshot,no_comm_zeroshot", "-t", "math", "--limit", "2", *TINY)
    # A run killed before it finished: its row says running, nobody holds its liveness lock.
    ShardWriter(results_env.parent / "shards", "deadbeef00000000").write_run(
        {"method": "latent", "benchmark": "math", "split": "math500", "seed": 0, "status": "running"})

    def listed(*extra):
        rows = list(csv.DictReader(io.StringIO(invoke("runs", "-f", "csv", *extra))))
        return {r["run key"]: r for r in rows}

    rows = listed()
    assert len(rows) == 3 and rows["deadbeef00000000"]["status"] == "interrupted"
    done = [r for k, r in rows.items() if k != "deadbeef00000000"]
    assert {r["configuration"] for r in done} == {"text_zeroshot", "no_comm_zeroshot"}
    assert all(r["status"] == "complete" and r["samples"] == "2" and r["errors"] == "0" for r in done)
    assert list(listed("deadbeef")) == ["deadbeef00000000"]  # a key prefix
    assert "pruned 1 runs" in invoke("runs", "--prune", "--status", "interrupted")
    assert len(listed()) == 2 and not (results_env.parent / "shards" / "deadbeef00000000").exists()
    bad = runner.invoke(app, ["runs", "--prune"])
    assert bad.exit_code != 0 and "--prune: name the runs" in bad.output + bad.stderr


def test_leaderboard_json_filters_and_names_and_sql_exports(results_env, tmp_path):
    import json

    invoke("run", "-m", "text_zeroshot,no_comm_zeroshot", "-t", "math", "--limit", "2", *TINY)
    data = json.loads(invoke("leaderboard", "-f", "json", "-m", "text_zeroshot"))
    assert data["metric"] == "success" and [c["method"] for c in data["cells"]] == ["text_zeroshot"]
    assert data["cells"][0]["n"] == 2 and data["cells"][0]["column"] == "math/math500"
    csv_text = invoke("leaderboard", "-f", "csv", "--receiver", "tiny-llama")
    assert csv_text.splitlines()[0] == "method,column,metric,value,n,lo,hi,errors" and len(csv_text.splitlines()) == 3
    for args, says in ((["-m", "text_zeroshto"], "did you mean 'text_zeroshot'"),
                       (["--receiver", "smollm2"], "no such receiver"),
                       (["--metric", "sucess"], "did you mean 'success'"),
                       (["--metric", "boxd"], "did you mean 'boxed'")):
        bad = runner.invoke(app, ["leaderboard", *args])
        assert bad.exit_code != 0 and says in bad.output + bad.stderr
    rows = json.loads(invoke("sql", "select method, count(*) as n from samples join runs using (run_key) "
                                    "group by 1 order by 1", "-f", "json"))
    assert rows == [{"method": "no_comm_zeroshot", "n": 2}, {"method": "text_zeroshot", "n": 2}]
    out = tmp_path / "q.csv"
    assert "2 rows" in invoke("sql", "select method from runs order by 1", "-f", "csv", "-o", str(out))
    assert out.read_text() == "method\nno_comm_zeroshot\ntext_zeroshot\n"


def test_two_databases_in_one_folder_keep_their_runs_apart(results_env):
    """A run writes its shards where only its own database ingests them: a run still writing
    for ``a.duckdb`` is not taken into ``b.duckdb`` beside it (nor into the default database)."""
    import csv
    import io

    from interlat_bench.results.shards import ShardWriter, shards_dir

    folder = results_env.parent
    a, b = folder / "a.duckdb", folder / "b.duckdb"
    assert len({shards_dir(a), shards_dir(b), shards_dir(results_env)}) == 3
    assert shards_dir(results_env) == folder / "shards"  # the default database's folder as before
    invoke("run", "-m", "text_zeroshot", "-t", "math", "--limit", "2", "--db", str(b), *TINY)
    ShardWriter(shards_dir(a), "deadbeef00000000").write_run(  # a's run, still running or killed
        {"method": "latent", "benchmark": "math", "split": "math500", "seed": 0, "status": "running"})
    invoke("run", "-m", "text_zeroshot,no_comm_zeroshot", "-t", "math", "--limit", "2", "--db", str(b), *TINY)

    def listed(db):
        return {r["configuration"] for r in csv.DictReader(io.StringIO(invoke("runs", "-f", "csv", "--db", str(db))))}

    assert listed(b) == {"no_comm_zeroshot", "text_zeroshot"}
    invoke("ingest", "--db", str(a))
    assert listed(a) == {"latent"}  # ingested where it belongs
