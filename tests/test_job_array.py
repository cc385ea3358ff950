"""`run --shard I/N`: a job array's tasks each compute a fixed part of every cell into one shared
results folder, without touching the database; `ingest` merges them, and a cell is complete only
once every sample is in. The records equal those of one process, sample for sample."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import duckdb
import pytest

GRID = ["-m", "text_zeroshot,no_comm_zeroshot", "-t", "probe", "--limit", "7", "--sender", "tiny-llama",
        "--receiver", "tiny-llama", "--max-new-tokens", "4", "--eval-batch", "1", "--no-leaderboard"]


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "interlat_bench.harness.entry", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(*procs: subprocess.Popen) -> None:
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out


def _records(db) -> list[tuple]:
    """Per run and sample: what was recorded, timings aside, and whether this process found the
    plan in the cache (the shards share one, so which of them collected it is a race)."""
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("""select r.method, s.sample_id, s.success, s.score, s.steps, s.error, s.metrics
                              from samples s join runs r using (run_key) order by 1, 2""").fetchall()
    return [(*row[:-1], json.dumps({k: v for k, v in json.loads(row[-1]).items() if k != "message_from_cache"},
                                   sort_keys=True)) for row in rows]


def _statuses(db) -> dict[str, tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return {m: (status, n) for m, status, n in con.execute("select method, status, n_samples from runs").fetchall()}


def test_three_shards_record_what_one_run_records(results_env, tmp_path):
    one, array = tmp_path / "one" / "interlat.duckdb", tmp_path / "array" / "interlat.duckdb"
    _finish(_cli("run", *GRID, "--db", str(one)))
    _finish(_cli("run", *GRID, "--db", str(array), "--shard", "0/3"), _cli("run", *GRID, "--db", str(array),
                                                                         "--shard", "1/3"))
    assert not array.exists()  # shards only: the database is not written while the array runs
    _finish(_cli("ingest", "--db", str(array)))
    assert _statuses(array) == {"text_zeroshot": ("incomplete", 7), "no_comm_zeroshot": ("incomplete", 7)}
    board = _cli("leaderboard", "--db", str(array))
    out, _ = board.communicate(timeout=300)
    assert "text_zeroshot" not in out and "2 unfinished runs left out" in out  # not a result yet
    _finish(_cli("run", *GRID, "--db", str(array), "--shard", "2/3"))
    _finish(_cli("ingest", "--db", str(array)))
    assert _statuses(array) == {"text_zeroshot": ("complete", 7), "no_comm_zeroshot": ("complete", 7)}
    assert _statuses(one) == _statuses(array)
    assert _records(array) == _records(one) and len(_records(one)) == 14


def test_bad_shard_is_a_one_line_error(results_env):
    from typer.testing import CliRunner

    from interlat_bench.harness.cli import app

    for bad in ("3/3", "1", "a/2", "-1/2"):
        result = CliRunner().invoke(app, ["run", *GRID, "--shard", bad])
        assert result.exit_code != 0 and "--shard" in result.output and "Traceback" not in result.output, result.output


def _launch(launcher: str, *args: str) -> subprocess.CompletedProcess:
    """``interlat-bench *args`` in 2 CPU processes started by torchrun or accelerate (whose
    --multi_gpu launcher starts them through torch.distributed.run on a CPU too; its --cpu
    launcher starts one)."""
    from pathlib import Path

    from test_deepspeed import free_port

    exe = Path(sys.executable)
    start = {"torchrun": [str(exe.with_name("torchrun")), "--nproc_per_node", "2", "--master_port", free_port()],
             "accelerate": [str(exe.with_name("accelerate")), "launch", "--multi_gpu", "--num_processes", "2",
                            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                            "--main_process_port", free_port()]}[launcher]
    return subprocess.run([*start, "-m", "interlat_bench.harness.entry", *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_two_launched_processes_record_what_one_process_does(launcher, results_env, tmp_path):
    """Under torchrun or accelerate every rank runs the grid (the plan collection split across
    ranks), plays its half of every cell's samples, and rank 0 ingests once both are done (gloo
    on a CPU)."""
    one, two = tmp_path / "one" / "interlat.duckdb", tmp_path / "two" / "interlat.duckdb"
    _finish(_cli("run", *GRID, "--db", str(one)))
    out = _launch(launcher, "run", *GRID, "--db", str(two))
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("runs,") == 1  # one summary, from rank 0, which played 4 of each cell's 7 samples
    assert "2 runs, 8 samples computed" in out.stdout, out.stdout
    assert _statuses(two) == _statuses(one) == {"text_zeroshot": ("complete", 7), "no_comm_zeroshot": ("complete", 7)}
    assert _records(two) == _records(one)


def test_accelerate_trains_one_receiver_over_two_processes(results_env):
    """`accelerate launch --multi_gpu` with 2 CPU processes: the receiver trains as one
    data-parallel job (8 conversations, batch 2 a process: 2 optimizer steps), written once,
    and loads in one process with weights other than the untrained model's."""
    from pathlib import Path

    from interlat_bench.trainers.checkpoint import load_receiver

    out = _launch("accelerate", "train", "-m", "no_comm", "-t", "math", "--receiver", "tiny-llama", "-p", "n_train=8")
    assert out.returncode == 0, out.stderr[-3000:]
    answers = out.stdout.splitlines()
    assert len(answers) == 1 and answers[0].startswith("receiver checkpoint: "), out.stdout
    folder = Path(answers[0].split(": ", 1)[1])
    saved = json.loads((folder / "train_config.json").read_text())
    assert saved["trained_by"] == {"engine": "DistributedDataParallel", "zero_stage": None, "world_size": 2}
    assert len((folder / "losses.csv").read_text().strip().splitlines()) == 1 + 2
    import torch

    from interlat_bench.harness.core.models import build_tiny

    trained, (initial, _) = load_receiver(folder, dtype="float32").lm.model, build_tiny("tiny-llama")
    assert trained.config.num_hidden_layers == initial.config.num_hidden_layers
    assert not torch.equal(trained.get_input_embeddings().weight, initial.get_input_embeddings().weight)
