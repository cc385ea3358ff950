"""bench/paper_scale.py runs end to end on a CPU at a small shape (a few tasks, short turns) and
reports every stage with its time and peak memory, and stores the device's per-token costs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_paper_scale_reports_every_stage(results_env, tmp_path):
    out = tmp_path / "report.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "paper_scale.py"), "--naive-tasks", "1",
                           "--batched-tasks", "4", "--comm-tasks", "1", "--plan-tokens", "8", "--turns", "2,3",
                           "--reply-tokens", "4", "--lockstep", "1,2", "--train-batch", "1", "--train-length", "32",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    for stage in ("load", "collection", "communication", "receiver", "training step small shape"):
        assert report[stage]["stage_s"] > 0 and report[stage].get("peak_rss_gib", report[stage].get("peak_gib")), stage
    assert report["collection"]["naive batch 1 tokens/s"] > 0
    assert set(report["collection"]["ratios to naive"]) == {"collector batch 16 tokens/s", "collector batch 64 tokens/s"}
    assert report["communication"]["full / K=8 untrained"] > 0
    assert set(report["receiver"]["re-encoded / cached"]) == {"2", "3"}
    assert report["receiver"]["lockstep 2 games: ms per reply token"] > 0
    assert report["training step small shape"]["step s"] > 0
    # The device's per-token costs, stored where `run --estimate` reads them (a private cache here).
    from interlat_bench.harness import estimate

    costs = estimate.stored_costs(None)
    assert costs.device == report["device"] and costs.parameters == report["load"]["parameters"]
    train = report["training step small shape"]
    assert costs.train_token_s == 1 / train["forward-backward tokens/s"] and costs.optimizer_step_s == train["optimizer step s"]
    assert set(costs.reply_token_s) == {1, 2} and str(estimate.costs_path(costs.device)) in done.stdout
