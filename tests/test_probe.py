"""The channel probe: deterministic, disjoint splits, a known chance level, honest grading."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from interlat_bench.benchmarks.base import Record
from interlat_bench.benchmarks.probe import COLOURS, ProbeBenchmark, parse_answer
from interlat_bench.harness.cli import app
from interlat_bench.harness.core.errors import UserError
from interlat_bench.harness.grid import expand
from interlat_bench.methods.base import NO_MESSAGE, Message


def test_samples_are_deterministic_and_splits_disjoint():
    a, b = ProbeBenchmark({}), ProbeBenchmark({})
    test, train = a.samples("test"), a.train_samples()
    assert [s.task for s in test] == [s.task for s in b.samples("test")]
    assert len(test) == 256 and len(train) == 256 and len({s.id for s in test + train}) == 512
    seen = {(s.task, s.data["options"]) for s in test}
    assert not seen & {(s.task, s.data["options"]) for s in train}
    assert [s.task for s in ProbeBenchmark({"seed": 1}).samples("test")] != [s.task for s in test]
    for s in test:
        assert s.data["answer"] in s.data["options"] and len(s.data["options"]) == 4
        assert f"The {s.data['target']} is in the {s.data['answer']} box." in s.task


def test_the_receivers_question_does_not_give_the_answer_away():
    # Every option is named once, in a random order: the question alone leaves 1/n_options.
    train = ProbeBenchmark({}).train_samples()
    firsts = {s.data["options"][0] == s.data["answer"] for s in train}
    assert firsts == {True, False}
    for s in train:
        question = s.data["conversation"][0]["content"]
        assert all(question.count(o) == 1 for o in s.data["options"])
        assert s.data["conversation"][1]["content"] == s.data["answer"]
    answers = [s.data["answer"] for s in train]
    assert max(answers.count(c) for c in COLOURS) / len(answers) < 0.25  # no colour dominates


@pytest.mark.parametrize("knobs", [{"n_facts": 3, "answer_position": "last"}, {"n_facts": 3, "answer_position": "first"}])
def test_difficulty_knobs(knobs):
    bench = ProbeBenchmark(knobs)
    for s in bench.samples("test", limit=20):
        facts = s.task.split(". ")[1:]
        target_fact = f"The {s.data['target']} is in the {s.data['answer']} box"
        index = next(i for i, f in enumerate(facts) if f.rstrip(".") == target_fact)
        assert index == (0 if knobs["answer_position"] == "first" else 2) and len(facts) == 3


def test_knobs_enter_the_run_key_and_bad_values_are_refused():
    def key(**params):
        return expand(methods_csv="no_comm", tasks_csv="probe", sender_model="s", receiver_model="r",
                      benchmark_params={"probe": params})[0].run_key
    assert len({key(), key(n_facts=2), key(n_options=3), key(answer_position="last"), key(seed=1)}) == 5
    with pytest.raises(UserError, match="n_options=1"):
        key(n_options=1)
    with pytest.raises(UserError, match="cannot draw"):
        ProbeBenchmark({"n_options": 2, "n_test": 5000}).samples("test")


def test_grading_and_chance():
    assert parse_answer("The key is in the Blue box.", ("red", "blue")) == "blue"
    assert parse_answer("red or blue", ("blue", "red")) == "red"   # the first named counts
    assert parse_answer("reddish", ("red", "blue")) is None         # whole words only

    class Agent:
        def begin(self, prompt, message, sample):
            self.prompt = prompt

        def respond(self, observation=None, info=None):
            return "green"

        def timings_ms(self):
            return {}

        def episode_metrics(self):
            return {}

    bench = ProbeBenchmark({})
    sample = bench.samples("test", limit=1)[0]
    agent = Agent()
    plan = Message(kind="text", text=f"The object is in the {sample.data['answer']} box.")
    record: Record = bench.play(sample, agent, plan)
    assert sample.data["answer"] not in agent.prompt.split("?")[0].split(":")[0]
    assert record.success == (sample.data["answer"] == "green") and record.metrics["chance"] == 0.25
    assert record.metrics["answer_in_plan"] == 1
    assert bench.play(sample, agent, NO_MESSAGE).metrics["answer_in_plan"] is None


def test_ranked_answers_score_one_sentence_per_option_and_keep_earlier_keys():
    """answer=rank asks the agent to choose among one sentence per option and grades the colour
    of the one chosen; it is not decoded in batches; left at generate it leaves the run key as
    it was (runs recorded before the setting keep theirs)."""
    class Agent:
        def begin(self, prompt, message, sample):
            self.prompt = prompt

        def choose(self, observation, options, info=None):
            self.options = options
            return options[-1]

        def timings_ms(self):
            return {}

        def episode_metrics(self):
            return {}

    bench = ProbeBenchmark({"answer": "rank"})
    sample = bench.samples("test", limit=1)[0]
    agent = Agent()
    record = bench.play(sample, agent, NO_MESSAGE)
    target, options = sample.data["target"], sample.data["options"]
    assert agent.options == [f"The {target} is in the {c} box." for c in options]
    assert record.metrics["predicted"] == options[-1] and record.success == (options[-1] == sample.data["answer"])
    assert bench.single_reply_prompt(sample) is None and ProbeBenchmark({}).single_reply_prompt(sample)

    def key(**params):
        return expand(methods_csv="no_comm", tasks_csv="probe", sender_model="s", receiver_model="r",
                      benchmark_params={"probe": params})[0].run_key
    assert key() == key(answer="generate") != key(answer="rank")


def test_probe_grid_on_tiny_models_records_chance_and_plans(results_env):
    out = CliRunner().invoke(app, ["run", "-m", "text_zeroshot,no_comm_zeroshot", "-t", "probe", "--limit", "3",
                                   "--receiver", "tiny-llama", "--sender", "tiny-llama", "--max-new-tokens", "3"])
    assert out.exit_code == 0, out.output
    assert "chance 25.0%" in out.output and "6 samples computed" in out.output


def test_benchmark_settings_from_the_command_line_reach_the_run_key():
    def spec(*settings):
        return expand(methods_csv="no_comm", tasks_csv="probe", sender_model="s", receiver_model="r",
                      settings=dict(s.split("=") for s in settings) if settings else None)[0]
    assert dict(spec().benchmark_params)["n_options"] == 4
    assert dict(spec("answer_position=last").benchmark_params)["answer_position"] == "last"
    assert spec("answer_position=last").run_key != spec().run_key
    with pytest.raises(UserError, match="--setting max_turns: no chosen benchmark takes it"):
        spec("max_turns=3")
    result = CliRunner().invoke(app, ["run", "-m", "no_comm", "-t", "probe", "--setting", "n_options=1"])
    assert result.exit_code != 0 and "n_options=1" in result.output


def test_fidelity_counts_the_targets_own_fact_not_its_colour_elsewhere():
    from interlat_bench.benchmarks.probe import fact_in_plan

    options = ("red", "blue", "green")
    assert fact_in_plan("1. The key is in the blue box. 2. Open it.", "key", "blue", options)
    assert fact_in_plan("Go to the blue box\nfor the KEY, it sits in the blue box", "key", "blue", options)
    # the answer's colour, but for another object; the target named with another colour
    assert not fact_in_plan("The coin is in the blue box. The key is in the red box.", "key", "blue", options)
    assert not fact_in_plan("Look in the blue box. Then find the key.", "key", "blue", options)
    assert not fact_in_plan("The keychain is in the blue box.", "key", "blue", options)


def test_fidelity_reads_the_object_as_the_target_and_refuses_a_plan_with_two_boxes_for_it():
    """The planner prompt asks where "the object" is, and SmolLM2's plans answer in those words;
    the first reading of fact_in_plan missed those plans and counted self-contradicting ones."""
    from interlat_bench.benchmarks.probe import fact_in_plan, placed_objects

    options = ("red", "blue", "green")
    # stated by the prompt's word for the target (the first reading: not stated)
    assert fact_in_plan("The object is in the blue box. Open the blue box.", "key", "blue", options, ("coin",))
    # two boxes for the target: no answer stated (the first reading: stated)
    assert not fact_in_plan("The object is in the red box. The key is in the blue box.", "key", "blue", options,
                            ("coin",))
    # another object's fact after the target's, in one sentence, is not the target's
    assert fact_in_plan("The key is in the blue box and the coin is in the red box.", "key", "blue", options,
                        ("coin",))
    assert not fact_in_plan("The object is the coin, in the blue box.", "key", "blue", options, ("coin",))
    assert placed_objects("Find the key. The coin is in the red box. The key is in the blue box.") == ("coin", "key")


def test_a_distractor_is_another_objects_other_colour():
    from interlat_bench.benchmarks.probe import distractor_in_plan

    options, others = ("red", "blue", "green"), ("coin",)
    # SmolLM2's commonest 2-fact plan: the target's fact, then the other object's
    assert distractor_in_plan("The object is in the blue box. The coin is in the red box.", "key", "blue", options,
                              others)
    # the other object in the answer's box, or not given a box, is no distractor
    assert not distractor_in_plan("The object is in the blue box. The coin is in the blue box.", "key", "blue",
                                  options, others)
    assert not distractor_in_plan("The key is in the blue box. Then find the coin.", "key", "blue", options, others)
    # the colour after the next object named is that object's, not the other's
    assert not distractor_in_plan("Find the coin; the key is in the blue box.", "key", "blue", options, others)
    assert distractor_in_plan("the COIN sits in the green box", "key", "blue", options, others)
    assert not distractor_in_plan("The key is in the red box.", "key", "blue", options, ())


def test_plan_tokens_grow_with_the_facts_to_state():
    from interlat_bench.benchmarks.probe import ProbeBenchmark

    assert ProbeBenchmark({}).method_defaults["plan_tokens"] == 16  # the default probe's keys unchanged
    assert ProbeBenchmark({"n_facts": 4}).method_defaults["plan_tokens"] == 64


@pytest.mark.slow
def test_probe_warm_up_makes_object_rows_name_their_object_on_held_out_plans(tmp_path):
    """The cause found at 4 facts x 8 options (SmolLM2 -> SmolLM2): every latent miss on a
    sample whose plan states the target's fact chose another fact's colour. The rows standing
    for object names had not learnt which object they name: the sender's state there is a
    near-tie between the facts still to state. After the warm-up of 300 MSE steps that the
    probe preset used, such a row was its object's nearest receiver embedding on held-out
    plans about half the time; the preset's warm-up now (ten times the steps) must make it so
    far more often. The second cause: what the adapter
    learns from the receiver's training plans alone does not carry over to new plans (the
    sender's own LM head names every such row); the warm-up reading further training plans
    (``TrainConfig.warmup_plans``) must name more of them again. Real model, real plans."""
    from dataclasses import replace

    import torch

    from interlat_bench.benchmarks.probe import OBJECTS
    from interlat_bench.collectors.messages import CollectConfig, collect_messages, load_messages
    from interlat_bench.harness.core.generation import Decoding
    from interlat_bench.harness.core.models import load
    from interlat_bench.methods.interlat import Latent
    from interlat_bench.trainers.adapter import CommAdapter
    from interlat_bench.trainers.receiver import build_examples, further_plan_rows, warm_up_adapter

    loaded = load("smollm2-135m", "float32")
    bench = ProbeBenchmark({"n_facts": 4, "n_options": 8})
    train, test = bench.train_samples(limit=128), bench.samples("test")[:32]
    further = bench.warmup_samples(train, 512)
    pool = train + further
    assert [s.id for s in pool] == [s.id for s in bench.train_samples(limit=512)]
    assert len(further) == 384 and not {s.task for s in pool} & {s.task for s in bench.samples("test")}
    collect = CollectConfig(sender_model="smollm2-135m", prompt_template=bench.planner_prompt,
                            decoding=Decoding(greedy=True, max_new_tokens=bench.method_defaults["plan_tokens"]))
    messages = {}
    for samples in (train, further, test):
        messages.update(load_messages(collect_messages(collect, [(s.id, s.task) for s in samples],
                                                       out_root=tmp_path, loaded=loaded)))
    tok, embed = loaded.tokenizer, loaded.model.get_input_embeddings()
    objects = {ids[0] for ids in (tok(" " + o, add_special_tokens=False).input_ids for o in OBJECTS) if len(ids) == 1}
    preset = Latent({}).train_config(bench)
    assert preset.warmup_plans is not None and preset.warmup_plans >= 2048
    preset = replace(preset, warmup_plans=512)
    old = replace(preset, adapter_warmup_steps=300, warmup_ce_weight=0.0, warmup_plans=None)
    alone = replace(preset, warmup_plans=None)
    examples = build_examples(tok, train, messages, "latent", preset)
    assert all(ex.row_tokens is not None for ex in examples)  # greedy plans: the rows are the plan's tokens

    def object_hits(cfg) -> float:
        torch.manual_seed(cfg.seed)
        adapter = CommAdapter(loaded.hidden_size, loaded.hidden_size)
        rows = further_plan_rows(tok, {s.id: messages[s.id] for s in pool}, examples, cfg) if cfg.warmup_plans else []
        assert len(rows) == (384 if cfg.warmup_plans else 0)
        warm_up_adapter(adapter, embed, examples, cfg, log=lambda *_: None, further=rows)
        table = torch.nn.functional.normalize(embed.weight.detach(), dim=-1)
        hits = []
        with torch.no_grad():
            for s in test:
                m = messages[s.id]
                nearest = (torch.nn.functional.normalize(adapter(m.latents.float()), dim=-1) @ table.T).argmax(-1)
                hits += [int(nearest[i]) == t for i, t in enumerate(m.token_ids) if t in objects]
        assert len(hits) > 50
        return sum(hits) / len(hits)

    before, now, wider = object_hits(old), object_hits(alone), object_hits(preset)
    print(f"object rows named on held-out plans: old warm-up {before:.2f}, preset on its training plans {now:.2f}, "
          f"with further plans {wider:.2f}")
    # Measured (128 training plans, 32 held-out; the preset's 3000 MSE steps): 0.51 with the
    # old warm-up, 0.75 with the preset, 0.90 with 384 further plans on one thread; 0.55, 0.67
    # and 0.90 on two (CI: other float reductions, other rows named).
    assert now >= 0.5 and now >= before + 0.05
    assert wider >= now + 0.1 and wider >= before + 0.25


def test_plan_shots_are_earlier_turns_of_the_senders_conversation():
    """plan_shots=k: the first k training tasks, each asked as the probe asks and answered with a
    plan stating its object's box, as (user, assistant) turns before the task's own; the sender's
    tokens are its chat template over those turns; 0 leaves the prompt and the run key as they were."""
    from interlat_bench.collectors.messages import prompt_ids
    from interlat_bench.harness.core.models import tokenizer
    from interlat_bench.harness.core.prompts import PROBE_PLAN_PROMPT, planner_turns

    bench = ProbeBenchmark({"plan_shots": 2})
    task = bench.samples("test", limit=1)[0].task
    turns = planner_turns(bench.planner_prompt, task)
    train = bench.train_samples(limit=2)
    assert [t["role"] for t in turns] == ["user", "assistant", "user", "assistant", "user"]
    assert turns[0]["content"] == PROBE_PLAN_PROMPT.format(task=train[0].task)
    assert turns[1]["content"].startswith(f"The {train[0].data['target']} is in the {train[0].data['answer']} box.")
    assert turns[-1]["content"] == PROBE_PLAN_PROMPT.format(task=task)
    tok = tokenizer("tiny-llama")
    assert prompt_ids(tok, bench.planner_prompt, task) == tok(
        tok.apply_chat_template(turns, add_generation_prompt=True, tokenize=False), add_special_tokens=False).input_ids
    assert ProbeBenchmark({"plan_shots": 0}).planner_prompt == ProbeBenchmark().planner_prompt == PROBE_PLAN_PROMPT

    def key(**params):
        return expand(methods_csv="text", tasks_csv="probe", sender_model="s", receiver_model="r",
                      benchmark_params={"probe": params})[0].run_key
    assert key() == key(plan_shots=0) != key(plan_shots=2)
