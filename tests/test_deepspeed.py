"""Two training steps through the DeepSpeed (ZeRO-2) path on CPU: DeepSpeed's CPU
accelerator with gloo, launched by torchrun as on a GPU box."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("deepspeed")
REPO = Path(__file__).resolve().parents[1]


def free_port() -> str:
    """A port nobody listens on now (two test runs on one machine must not share one)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])

SCRIPT = """
import sys
from pathlib import Path
from interlat_bench.benchmarks.math import MathBenchmark
from interlat_bench.trainers.config import preset
from interlat_bench.trainers.receiver import train_receiver
samples = MathBenchmark().train_samples(limit=4)
cfg = preset("quick", n_train=4, max_len=48, batch_size=2)
print("CHECKPOINT", train_receiver("tiny-llama", "none", samples, {}, cfg,
      deepspeed=sys.argv[2], out_root=Path(sys.argv[1])))
"""


@pytest.mark.slow
def test_two_steps_through_deepspeed_zero2_on_cpu(tmp_path, results_env):
    script = tmp_path / "train_ds.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).with_name("torchrun")
    out = subprocess.run([str(torchrun), "--nproc_per_node", "1", "--master_port", free_port(), str(script),
                          str(tmp_path / "ckpt"), str(REPO / "trainers" / "zero2.json")],
                         capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    folder = Path(out.stdout.split("CHECKPOINT", 1)[1].strip().splitlines()[0])
    rows = (folder / "losses.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2  # header + two optimizer steps
    saved = json.loads((folder / "train_config.json").read_text())
    assert saved["kind"] == "none"
    assert saved["trained_by"]["engine"] == "DeepSpeedEngine" and saved["trained_by"]["zero_stage"] == 2


@pytest.mark.slow
def test_two_cpu_processes_train_one_receiver_with_zero2_and_write_it_once(tmp_path, results_env):
    """torchrun with two CPU processes: one DeepSpeed job of world size 2 (DeepSpeed builds its
    shared-memory collective op with the C++ compiler on first use), batches split between
    the ranks, one checkpoint written by the first rank, and one progress line per step."""
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).with_name("torchrun")
    out = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", free_port(), "-m",
                          "interlat_bench.harness.entry", "train", "-m", "no_comm", "-t", "math", "--receiver",
                          "tiny-llama", "-p", "n_train=8", "--deepspeed", str(REPO / "trainers" / "zero2.json")],
                         capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    answers = out.stdout.splitlines()  # the answer alone: DeepSpeed's notices go to stderr
    assert len(answers) == 1 and answers[0].startswith("receiver checkpoint: "), out.stdout
    folder = Path(answers[0].split(": ", 1)[1])
    saved = json.loads((folder / "train_config.json").read_text())
    assert saved["trained_by"] == {"engine": "DeepSpeedEngine", "zero_stage": 2, "world_size": 2}
    # 8 conversations, batch 2 per process, 2 processes: 2 optimizer steps
    assert len((folder / "losses.csv").read_text().strip().splitlines()) == 1 + 2
    assert out.stderr.count("train no_comm (empty slot) receiver: 2/2") == 1, out.stderr[-2000:]
    assert not list(folder.parent.glob(".*tmp*")) and len(list(folder.parent.iterdir())) == 1


@pytest.mark.slow
def test_zero3_on_two_cpu_processes_saves_the_whole_receiver_zero2_would(tmp_path, results_env):
    """ZeRO-3 leaves each process a partition of the weights: the checkpoint must still hold the
    whole receiver, the one ZeRO-2 trains from the same data and seed (float tolerance), and
    load in one process."""
    import torch

    from interlat_bench.trainers.checkpoint import load_receiver

    folders = {}
    for stage in (2, 3):
        env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1",
               "INTERLAT_CACHE": str(tmp_path / f"cache{stage}")}
        torchrun = Path(sys.executable).with_name("torchrun")
        out = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", free_port(), "-m",
                              "interlat_bench.harness.entry", "train", "-m", "no_comm", "-t", "math", "--receiver",
                              "tiny-llama", "-p", "n_train=8", "--deepspeed",
                              str(REPO / "trainers" / f"zero{stage}.json")],
                             capture_output=True, text=True, env=env, timeout=900)
        assert out.returncode == 0, out.stderr[-3000:]
        folders[stage] = Path(out.stdout.strip().splitlines()[-1].split(": ", 1)[1])
        saved = json.loads((folders[stage] / "train_config.json").read_text())
        assert saved["trained_by"] == {"engine": "DeepSpeedEngine", "zero_stage": stage, "world_size": 2}
    two, three = (load_receiver(folders[s]).lm.model.state_dict() for s in (2, 3))
    initial = load_receiver(folders[2]).lm.model  # the same architecture, for the shapes
    assert {k: v.shape for k, v in three.items()} == {k: v.shape for k, v in initial.state_dict().items()}
    assert all(torch.allclose(two[k], three[k], atol=1e-5) for k in two), \
        max((two[k] - three[k]).abs().max().item() for k in two)
