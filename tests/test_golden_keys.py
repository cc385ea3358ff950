"""Keys do not move when the code is reorganised: the run keys, receiver checkpoint keys and
plan-collection keys of a fixed grid (every method on MATH, ALFWorld, the probe and two of their
settings, seeds 0 and 1) equal those the code computed before the stages became specs
(tests/golden_keys.json, written by that code at da19791). An existing results database and
message cache are then found by the new code as they were. Checkpoint keys are pinned for given
training data ids; what those ids hold (``training_data_ids``: each id with a digest of its
conversation, since 2026-12-07) is pinned by tests/test_training_wiring.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from interlat_bench.benchmarks.base import Sample
from interlat_bench.collectors.messages import content_key
from interlat_bench.collectors.plans import collect_config
from interlat_bench.harness.core.message import MessageKind
from interlat_bench.harness.core.registry import benchmarks, methods
from interlat_bench.harness.core.stages import PlanCollection
from interlat_bench.harness.grid import expand
from interlat_bench.trainers.checkpoint import checkpoint_key
from interlat_bench.trainers.config import TrainConfig

GOLDEN = json.loads((Path(__file__).parent / "golden_keys.json").read_text())
CASES = [("math", {}), ("alfworld", {}), ("probe", {}), ("probe", {"n_facts": 4, "n_options": 8}),
         ("alfworld", {"sender_view": "expert"})]
TASKS = [Sample("a", "task a"), Sample("b", "task b")]
GOLDEN_METHODS = {name.split("|")[0] for name in GOLDEN["run"]}


def _keys() -> dict[str, dict[str, str]]:
    out = {"run": {}, "checkpoint": {}, "collection": {}}
    for task, settings in CASES:
        usable = [m for m in methods.names() if methods.get(m).benchmarks is None or task in methods.get(m).benchmarks]
        specs = expand(methods_csv=",".join(usable), tasks_csv=task, seeds=[0, 1], sender_model="smollm2-135m",
                       receiver_model="smollm2-135m", dtype="float32", limit=8, settings=settings)
        for s in specs:
            name = (f"{s.method}|{task}|{json.dumps(settings, sort_keys=True)}|{s.split}|"
                    f"{json.dumps(dict(s.method_params), sort_keys=True)}|{s.seed}")
            out["run"][name] = s.run_key
            trained = s.stages.receiver_training
            if trained is not None:
                out["checkpoint"][name] = checkpoint_key(
                    trained.receiver_model, trained.kind, TrainConfig(**trained.config()), ["a", "b"], "msgs", trained.dtype,
                    576 if trained.kind is MessageKind.LATENT else None, trained.layout)
            plans = s.stages.messages if isinstance(s.stages.messages, PlanCollection) else \
                trained.plans if trained is not None else None
            if plans is not None:
                bench = benchmarks.get(s.benchmark)(dict(s.benchmark_params))
                out["collection"][name] = content_key(collect_config(plans), bench.sender_tasks(TASKS))
    return out


# What a preset held when the golden keys were written, where it has changed since: a changed
# preset trains a new receiver, so its keys move by design; with the old values back every key
# must be the golden one. ABSENT: a setting added since.
ABSENT = object()
PRESET_CHANGES = {"probe": {
    "warmup_plans": ABSENT,  # the adapter warm-up's further plans (2026-12-06)
    "adapter_warmup_steps": 1000, "warmup_ce_weight": 0.1,  # the warm-up on the MSE alone (2026-12-06)
    "adapter_positions": ABSENT,  # rotary positions in the adapter (2026-12-07)
}}
# Benchmarks whose scoring changed since (``Benchmark.scoring``): their run keys move by design.
SCORING_CHANGES = ("probe",)  # fact_in_plan's second reading (2026-12-06)


def _before_scoring_changes(monkeypatch):
    for task in SCORING_CHANGES:
        monkeypatch.setattr(benchmarks.get(task), "scoring", "")


def _before_preset_changes(monkeypatch):
    for task, before in PRESET_CHANGES.items():
        bench = benchmarks.get(task)
        overrides = {**bench.train_overrides, **before}
        monkeypatch.setattr(bench, "train_overrides", {k: v for k, v in overrides.items() if v is not ABSENT})
    _before_scoring_changes(monkeypatch)


@pytest.mark.parametrize("kind", ["run", "checkpoint", "collection"])
def test_keys_are_those_of_the_code_before(kind, monkeypatch):
    _before_preset_changes(monkeypatch)
    # Methods added since (the training-free families) have keys of their own, not golden ones.
    now = {name: key for name, key in _keys()[kind].items() if name.split("|")[0] in GOLDEN_METHODS}
    assert set(now) == set(GOLDEN[kind])
    moved = {name: (GOLDEN[kind][name], key) for name, key in now.items() if key != GOLDEN[kind][name]}
    assert not moved, f"{len(moved)} {kind} keys moved, e.g. {next(iter(moved.items()))}"


def test_a_scoring_change_moves_only_its_benchmarks_run_keys(monkeypatch):
    """A new reading of a record moves the runs that must be evaluated again, and neither the
    receivers nor the plans they reuse."""
    before = _keys()
    _before_scoring_changes(monkeypatch)
    old = _keys()
    assert before["checkpoint"] == old["checkpoint"] and before["collection"] == old["collection"]
    moved = {name for name, key in before["run"].items() if key != old["run"][name]}
    assert moved == {name for name in before["run"] if name.split("|")[1] in SCORING_CHANGES}


def test_the_preset_changes_move_only_the_latent_receivers_of_their_benchmark(monkeypatch):
    """The probe preset's changes are adapter settings: of the golden keys they move the probe's
    latent-receiver runs and checkpoints (latent and the methods that train one), and no
    collection key."""
    _before_scoring_changes(monkeypatch)
    now = _keys()
    moved = {kind: {name for name, key in now[kind].items() if name in GOLDEN[kind] and key != GOLDEN[kind][name]}
             for kind in now}
    assert not moved["collection"]
    assert moved["run"] and all(name.split("|")[1] == "probe" for name in moved["run"])
    trains_latent = {m for m in GOLDEN_METHODS
                     if getattr(methods.get(m), "trained_with", None) is MessageKind.LATENT}
    assert {name.split("|")[0] for name in moved["checkpoint"]} <= trains_latent
    assert "latent" in {name.split("|")[0] for name in moved["checkpoint"]}
