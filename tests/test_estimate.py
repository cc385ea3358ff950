"""`run --dry-run --estimate`: every stage a grid would compute, timed with a device's stored
per-token costs, counted once where cells share it, nothing for what the cache or the results
already hold; split across devices except a training-free sender's pass."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from interlat_bench.harness import estimate, grid, runner
from interlat_bench.harness.cli import app
from interlat_bench.harness.core import models
from interlat_bench.harness.core.errors import UserError
from interlat_bench.harness.core.runspec import DecodingSpec

TINY = models.size("tiny-llama").parameters
# One second per unit of work on a model of tiny-llama's size: an estimate's seconds are its counts.
UNIT = estimate.Costs(device="CPU (test)", dtype="float32", parameters=TINY, train_parameters=TINY,
                      plan_token_s={64: 1.0}, latent_step_s=1.0, reply_token_s={1: 1.0, 4: 0.75, 16: 0.5}, train_token_s=1.0,
                      optimizer_step_s=100.0)
ARGS = dict(methods_csv="latent,text,no_comm,cross_task,latentmas", tasks_csv="probe", splits_csv="test", sender_model="tiny-llama",
            receiver_model="tiny-llama", limit=4, decoding=DecodingSpec(max_new_tokens=4),
            method_params={"n_train": 4, "latent_steps": 3})


def _stages(db) -> dict[tuple[str, str], estimate.StageTime]:
    specs = grid.expand(**ARGS)
    return {(s.cell.split()[0], s.stage): s for s in estimate.estimate(runner.plan_grid(specs, db), UNIT).stages}


def test_costs_come_from_the_scripts_report_and_read_back(results_env):
    report = {"device": "CPU (test)", "dtype": "float32", "date": "today", "shape": "small",
              "load": {"parameters (B)": 0.016, "parameters": 16_300_000},
              "collection": {"naive batch 1 tokens/s": 5.0, "collector batch 16 tokens/s": 100.0,
                             "collector batch 64 tokens/s": 250.0},
              "communication": {"K=8 untrained s/task": 0.4, "K=8 student s/task": 0.5},
              "receiver": {"lockstep 1 games: ms per reply token per game": 40.0,
                           "lockstep 16 games: ms per reply token per game": 5.0},
              "training step small shape": {"tokens/s": 200.0, "forward-backward tokens/s": 250.0,
                                            "optimizer step s": 0.8, "parameters (B)": 0.016,
                                            "parameters": 16_300_000}}
    costs = estimate.Costs.from_report(report, "training step small shape")
    assert costs.plan_token_s == {16: 0.01, 64: 0.004} and costs.latent_step_s == 0.05
    assert costs.reply_token_s == {1: 0.04, 16: 0.005} and costs.train_token_s == 0.004
    assert costs.optimizer_step_s == 0.8
    assert costs.parameters == 16_300_000 and not costs.gpu
    assert estimate.Costs.at_batch(costs.plan_token_s, 32) == 0.01 and estimate.Costs.at_batch(costs.plan_token_s, 8) == 0.01
    assert estimate.Costs.read(estimate.store(costs)) == costs
    assert estimate.costs_path("NVIDIA H100 80GB HBM3").name == "nvidia-h100-80gb-hbm3.json"
    report["training step small shape"] = {"does not fit": "out of memory on one GPU"}
    with pytest.raises(UserError, match="out of memory"):
        estimate.Costs.from_report(report, "training step small shape")


def test_each_stage_is_counted_once_and_what_is_cached_or_recorded_costs_nothing(results_env, tmp_path):
    fresh = _stages(results_env)
    # latent and text train on one collection of training plans, and cross_task reads with
    # latent's receiver: each counted once, with latent.
    assert ("latent", "training plans") in fresh and ("text", "training plans") not in fresh
    # The probe's latent warm-up also reads plans for further training tasks (warmup_plans): a
    # collection of their own, counted with latent, that text does not wait for.
    assert fresh[("latent", "training plans")].work.startswith("4 plans")
    assert fresh[("latent", "warm-up plans")].work.startswith(f"{2048 - 4} plans")
    assert ("text", "warm-up plans") not in fresh
    assert {m for m, s in fresh if s == "receiver training"} == {"latent", "text", "no_comm"}
    assert ("cross_task", "evaluation plans") not in fresh and ("cross_task", "evaluation") in fresh
    plans = fresh[("latent", "evaluation plans")]
    length = int(plans.work.split(" x ")[1].split()[0])
    assert plans.work.startswith("4 plans") and plans.seconds == 4 * length  # one second a plan token
    # Single-reply probe: the 4 replies decoded together (up to 16 would be), 0.75 s a token
    # each at 4 at once, 4 tokens a reply; and the prompts (with a plan's rows) read in a forward
    # pass, a third of a training token each.
    read = {m: int(fresh[(m, "evaluation")].work.split(", ")[1].split()[0]) for m in ("latent", "no_comm", "latentmas")}
    for m in read:
        assert fresh[(m, "evaluation")].seconds == pytest.approx(4 * 4 * 0.75 + read[m] / 3)
    assert read["latent"] == read["no_comm"] + 4 * length and read["latentmas"] == read["no_comm"] > 4 * 10
    # latentmas: 4 tasks x (3 latent steps + the prompt), on every device whole.
    sender = fresh[("latentmas", "messages")]
    assert sender.seconds == 4 * 4 and sender.on(4) == sender.seconds and not sender.splits
    training = fresh[("no_comm", "receiver training")]
    conversations, epochs, tokens, steps = (float(re.search(pattern, training.work).group(1)) for pattern in
                                            (r"^(\d+) conversations", r"x ([\d.]+) epochs", r"(\d+) tokens an epoch",
                                             r"([\d.]+) steps"))
    assert conversations == 4 and tokens > 4 * 10 and steps >= 1
    assert training.seconds == pytest.approx(epochs * tokens + steps * 100.0)  # tokens, then the optimizer's updates
    assert training.on(4) == training.seconds / 4
    # A latent receiver's step also runs the plan and separation forwards: it costs more a token.
    assert fresh[("latent", "receiver training")].seconds > fresh[("text", "receiver training")].seconds

    runner.run_grid(grid.expand(**ARGS), results_env, log=lambda *a: None)
    assert _stages(results_env) == {}  # every sample recorded: nothing left
    # Another results database over the same cache: plans and receivers are found, samples not.
    elsewhere = _stages(tmp_path / "other" / "interlat.duckdb")
    assert set(elsewhere) == {("latent", "evaluation"), ("text", "evaluation"), ("no_comm", "evaluation"),
                              ("cross_task", "evaluation"), ("latentmas", "messages"), ("latentmas", "evaluation")}


def test_the_estimate_scales_by_parameters(results_env):
    half = replace(UNIT, parameters=TINY * 2, train_parameters=TINY * 2)
    specs = grid.expand(**ARGS)
    full = estimate.estimate(runner.plan_grid(specs, results_env), UNIT)
    halved = estimate.estimate(runner.plan_grid(specs, results_env), half)
    assert halved.total() == pytest.approx(full.total() / 2)


def test_run_estimate_prints_the_table_or_says_what_is_missing(results_env, tmp_path):
    args = ["run", "-m", "no_comm,latentmas", "-t", "probe", "--limit", "2", "--sender", "tiny-llama",
            "--receiver", "tiny-llama", "--estimate"]
    missing = CliRunner().invoke(app, args, env={"COLUMNS": "250"})
    assert missing.exit_code == 1
    assert "no stored costs for this device" in missing.output and "bench/paper_scale.py" in missing.output
    costs = tmp_path / "h100.json"
    costs.write_text(json.dumps(replace(UNIT, device="NVIDIA H100").to_json()))
    shown = CliRunner().invoke(app, [*args, "--costs", str(costs)], env={"COLUMNS": "250"})
    assert shown.exit_code == 0, shown.output
    assert "estimate on NVIDIA H100" in shown.output and "8 devices" in shown.output and "not split" in shown.output
    assert not results_env.exists()  # a dry run writes no results
    costs.write_text("{}")
    bad = CliRunner().invoke(app, [*args, "--costs", str(costs)], env={"COLUMNS": "250"})
    assert bad.exit_code == 1 and "not a costs file" in bad.output


def test_cells_of_a_sweep_are_named_by_what_they_sweep(results_env):
    specs = grid.expand(**{**ARGS, "methods_csv": "latentmas", "method_params": {"latent_steps": [0, 2]}})
    cells = {s.cell for s in estimate.estimate(runner.plan_grid(specs, results_env), UNIT).stages}
    assert cells == {"latentmas[latent_steps=0] probe/test seed 0", "latentmas[latent_steps=2] probe/test seed 0"}
