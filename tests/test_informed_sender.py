"""ALFWorld's ``sender_view=expert``: the sender's planner prompt also lists the handcoded
expert's actions for the game; the receiver sees only the message. Real games, real engine."""

import pytest

pytest.importorskip("alfworld")

from interlat_bench.benchmarks.alfworld import AlfworldBenchmark  # noqa: E402
from interlat_bench.benchmarks.alfworld_env import TextGame  # noqa: E402
from interlat_bench.harness.core.registry import benchmarks  # noqa: E402
from interlat_bench.harness.grid import expand  # noqa: E402


def _listed_actions(facts: str) -> list[str]:
    return [line.split(". ", 1)[1] for line in facts.splitlines() if line[:1].isdigit()]


def test_the_informed_senders_facts_are_the_actions_that_win_the_game(results_env):
    """The facts must be worth carrying: replayed in the real engine, they win each game."""
    bench = AlfworldBenchmark({"sender_view": "expert"})
    samples = bench.samples("seen", limit=2)
    for sample in samples:
        actions = _listed_actions(sample.data["sender_facts"])
        assert actions, sample.data["sender_facts"]
        with TextGame(sample.data["game"], expert=False, max_steps=len(actions)) as game:
            game.reset()
            won = False
            for action in actions:
                _, won, done, _ = game.step(action)
                if done:
                    break
        assert won, (sample.id, actions)
        told = bench.sender_task(sample)
        assert told.startswith(sample.task) and all(a in told for a in actions)


def test_the_paper_view_gives_the_sender_the_task_alone_and_keeps_run_keys(results_env):
    plain = AlfworldBenchmark({})
    sample = plain.samples("seen", limit=1)[0]
    assert "sender_facts" not in sample.data and plain.sender_task(sample) == sample.task
    # The setting at its default stays out of the run key: runs recorded before it keep theirs.
    kw = dict(methods_csv="text", tasks_csv="alfworld", seeds=[0], sender_model="tiny-llama", receiver_model="tiny-llama",
              splits_csv="seen")
    [default] = expand(**kw)
    [task_view] = expand(**kw, settings={"sender_view": "task"})
    [informed] = expand(**kw, settings={"sender_view": "expert"})
    assert "sender_view" not in dict(default.benchmark_params) and default.run_key == task_view.run_key
    assert dict(informed.benchmark_params)["sender_view"] == "expert" and informed.run_key != default.run_key


def test_training_samples_carry_their_own_expert_actions(results_env):
    bench = AlfworldBenchmark({"sender_view": "expert"})
    for sample in bench.train_samples(limit=2):
        played = [t["content"].split("Action: ")[1].strip() for t in sample.data["conversation"]
                  if t["role"] == "assistant" and not t.get("context")]
        assert _listed_actions(sample.data["sender_facts"]) == played


def test_an_unknown_sender_view_is_refused():
    from interlat_bench.harness.core.errors import UserError

    with pytest.raises(UserError, match="sender_view"):
        expand(methods_csv="text", tasks_csv="alfworld", seeds=[0], sender_model="tiny-llama", receiver_model="tiny-llama",
               settings={"sender_view": "oracle"})
    assert benchmarks.get("alfworld").diagnostics["sender_view"] == "expert"  # tables label the informed rows


def test_the_sender_is_given_the_facts_when_it_plans(results_env):
    """The collection reads `sender_task`: the same game with and without the facts is planned
    from different prompts (a different collection), with them in the prompt it was given."""
    from interlat_bench.collectors.plans import collect_plans
    from interlat_bench.methods.sending import SENDER_DEFAULTS, plan_collection

    plans = {}
    for view in ("task", "expert"):
        bench = AlfworldBenchmark({"sender_view": view})
        stage = plan_collection({**SENDER_DEFAULTS, "plan_tokens": 4}, bench, sender_model="tiny-llama", dtype="float32",
                                seed=0)
        plans[view] = collect_plans(stage, bench.sender_tasks(bench.samples("seen", limit=1)))
    assert plans["task"].key != plans["expert"].key
    informed = AlfworldBenchmark({"sender_view": "expert"})
    [(_, told)] = informed.sender_tasks(informed.samples("seen", limit=1))
    assert "an expert solved this exact game" in told
