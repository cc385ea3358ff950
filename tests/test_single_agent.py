"""Single-agent baselines: the conversation each reads, in training and at evaluation alike."""

from __future__ import annotations

from interlat_bench.benchmarks.base import Sample
from interlat_bench.harness.core import conversation as conv
from interlat_bench.harness.core.message import Message, MessageKind
from interlat_bench.harness.core.models import tokenizer_for_tiny
from interlat_bench.trainers.config import preset
from interlat_bench.trainers.receiver import build_examples

PLAN_PROMPT = "Plan for: {task}"
SAMPLE = Sample("t1", "the key is in the blue box", {"conversation": [
    {"role": "user", "content": "Which box holds the key?"}, {"role": "assistant", "content": "blue"}]})
PLAN = Message(kind=MessageKind.TEXT, text="Look in the blue box first.")


def supervised_text(tok, ex) -> str:
    return tok.decode([t for t, s in zip(ex.after, ex.supervised) if s])


def test_own_plan_is_context_and_the_answer_is_the_only_target():
    tok = tokenizer_for_tiny()
    ex = build_examples(tok, [SAMPLE], {"t1": PLAN}, "text", preset("quick", max_len=64),
                        layout="own_plan", plan_prompt=PLAN_PROMPT)[0]
    before, after = tok.decode(ex.before), tok.decode(ex.after)
    # Planner prompt with the task, then the plan as the agent's own turn: all before the
    # acting part, so max_len never truncates them away.
    assert "Plan for: the key is in the blue box" in before and PLAN.text in before
    assert before.index("Plan for") < before.index(PLAN.text)
    assert "Which box holds the key?" in after and PLAN.text not in after
    assert supervised_text(tok, ex).startswith("blue")
    assert not ex.slot and ex.latents is None and ex.plan_ids == []


def test_no_cot_reads_the_plain_conversation():
    tok = tokenizer_for_tiny()
    ex = build_examples(tok, [SAMPLE], {}, "none", preset("quick"), layout="inline")[0]
    text = tok.decode(ex.before + ex.after)
    assert ex.before == [] and not ex.slot
    assert conv.SLOT_INTRO not in text and conv.BOP not in text and "blue box" not in text
    assert supervised_text(tok, ex).startswith("blue")


def test_evaluation_opens_the_conversation_as_training_does():
    """The agent's first turns are conv.opening's, the function training uses."""
    msgs = conv.opening("Which box holds the key?", "own_plan", message_kind="text", plan_text=PLAN.text,
                        task=SAMPLE.task, plan_prompt=PLAN_PROMPT)
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"] and msgs[1]["context"]
    enc = conv.encode(tokenizer_for_tiny(), msgs, add_generation_prompt=True)
    assert not any(enc.labels_after)  # nothing of the opening is a training target


def test_single_agents_in_a_grid(results_env):
    import duckdb
    from typer.testing import CliRunner

    from interlat_bench.harness.cli import app

    out = CliRunner().invoke(app, [
        "run", "-m", "cot_full,no_cot", "-t", "probe", "--limit", "3", "--receiver", "tiny-llama",
        "--sender", "tiny-qwen", "--max-new-tokens", "2", "--param", "n_train=4", "--param", "plan_tokens=5",
        "--no-leaderboard"])
    assert out.exit_code == 0, out.output
    con = duckdb.connect(str(results_env), read_only=True)
    rows = dict(con.execute("""select r.method, list(struct_pack(sender := r.sender_model, bytes := s.metrics->>'message_bytes',
                                      internal := s.metrics->>'message_internal'))
                               from samples s join runs r using (run_key) where s.error is null group by 1""").fetchall())
    # cot_full's plan is written by the receiver model and ships nothing; no_cot runs no sender.
    assert {r["sender"] for r in rows["cot_full"]} == {"tiny-llama"}
    assert {(r["bytes"], r["internal"]) for r in rows["cot_full"]} == {("0", "true")}
    assert {r["sender"] for r in rows["no_cot"]} == {None} and len(rows["no_cot"]) == 3
