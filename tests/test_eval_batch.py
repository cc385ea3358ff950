"""Single-reply benchmarks decode several samples' replies in one batch (``--eval-batch``):
each reply must be the one decoded alone, and a run's records must not depend on the batch."""

import duckdb
import pytest
import torch
from typer.testing import CliRunner

from interlat_bench.benchmarks.base import Sample
from interlat_bench.harness.cli import app
from interlat_bench.harness.core import models
from interlat_bench.harness.core.generation import Decoding
from interlat_bench.methods.agents import ReceiverAgent
from interlat_bench.methods.base import Message

# Its greedy replies differ from prompt to prompt (the tiny Llama's are all newlines).
MODEL = "tiny-gemma3"
# Plans of different lengths, so that the batch is padded differently for each row.
EPISODES = [(f"Solve problem {i}: what is {i} + {i * 7}?", Message(kind="text", text="add them " * (1 + 3 * i)),
             Sample(f"s{i}", f"task {i}")) for i in range(5)]


def _alone(lm, dec, seed=0):
    out = []
    for prompt, message, sample in EPISODES:
        agent = ReceiverAgent(lm, dec, seed=seed)
        agent.begin(prompt, message, sample)
        out.append((agent.respond(), agent.episode_metrics()))
    return out


def _prefetched(lm, dec, seed=0):
    agent = ReceiverAgent(lm, dec, seed=seed)
    agent.prefetch(EPISODES)
    out = []
    for prompt, message, sample in EPISODES:
        agent.begin(prompt, message, sample)
        out.append((agent.respond(), agent.episode_metrics(), agent.timings_ms()))
    return out


@pytest.mark.parametrize("greedy", [True, False])
def test_prefetched_replies_are_the_replies_decoded_alone(greedy):
    lm = models.load(MODEL, dtype="float32")
    dec = Decoding(greedy=greedy, max_new_tokens=12, lookup_tokens=0)
    alone, batched = _alone(lm, dec), _prefetched(lm, dec)
    assert [r for r, _ in alone] == [r for r, _, _ in batched]
    assert len({r for r, _ in alone}) > 1  # the rows differ, so a mix-up would show
    for (_, solo), (_, metrics, times) in zip(alone, batched, strict=True):
        assert metrics == {**solo, "eval_batch": len(EPISODES)}
        assert times["receiver"] > 0  # the batch's time, as each episode waited for it


def test_prefetched_episode_continues_like_one_decoded_alone():
    # The batch's KV cache is not the episode's: a further turn re-encodes its history.
    lm = models.load(MODEL, dtype="float32")
    dec = Decoding(max_new_tokens=6, lookup_tokens=0)
    prompt, message, sample = EPISODES[2]
    alone = ReceiverAgent(lm, dec)
    alone.begin(prompt, message, sample)
    expected = [alone.respond(), alone.respond("Observation: nothing.")]
    agent = ReceiverAgent(lm, dec)
    agent.prefetch(EPISODES)
    agent.begin(prompt, message, sample)
    assert [agent.respond(), agent.respond("Observation: nothing.")] == expected
    assert torch.equal(agent.history, alone.history)


def _outputs(db):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("""SELECT r.method, s.sample_id, s.success, s.metrics->>'output', s.metrics->>'eval_batch'
                              FROM samples s JOIN runs r USING (run_key) ORDER BY 1, 2""").fetchall()
    finally:
        con.close()


def test_a_run_records_the_same_replies_at_any_batch(results_env, tmp_path):
    args = ["run", "-m", "text_zeroshot,no_comm_zeroshot", "-t", "math", "--limit", "5", "--receiver", MODEL,
            "--sender", "tiny-llama", "--max-new-tokens", "8", "--param", "plan_tokens=6", "--no-leaderboard"]
    runner = CliRunner()
    one = runner.invoke(app, [*args, "--eval-batch", "1"])
    assert one.exit_code == 0, one.output
    alone = _outputs(results_env)
    other = tmp_path / "other" / "results.duckdb"
    batched = runner.invoke(app, [*args, "--eval-batch", "2", "--db", str(other)])
    assert batched.exit_code == 0, batched.output
    together = _outputs(other)
    assert len(alone) == 10 and len({row[3] for row in alone}) > 2
    assert [row[:4] for row in together] == [row[:4] for row in alone]
    # Batches of 2 over 5 samples: two pairs and a last sample played alone.
    assert [row[4] for row in together if row[0] == "no_comm_zeroshot"].count("2") == 4
    assert {row[4] for row in alone} == {None}


def test_cli_default_is_the_runners():
    import inspect

    from interlat_bench.harness import cli, playing

    assert inspect.signature(cli.run).parameters["eval_batch"].default.default == playing.EVAL_BATCH


def test_rows_that_finish_leave_the_batch_without_changing_the_others():
    from interlat_bench.harness.core.generation import generate, left_pad

    lm = models.load(MODEL, dtype="float32")
    dec = Decoding(max_new_tokens=12, lookup_tokens=0)
    prompts = [lm.tokenizer.encode(p) for p, _, _ in EPISODES]

    def alone(eos):
        return [generate(lm.model, eos_ids=eos, dec=dec, input_ids=torch.tensor([p]), capture_hidden=True)
                for p in prompts]

    free = alone(set())
    # End of reply: tokens three rows write early, so that those rows finish first.
    eos = {free[0].token_ids[0][1], free[1].token_ids[0][2], free[2].token_ids[0][3]}
    expected = alone(eos)
    ids, mask = left_pad(prompts, 0, "cpu")
    batch = generate(lm.model, eos_ids=eos, dec=dec, input_ids=ids, attention_mask=mask, capture_hidden=True)
    lengths = [len(e.token_ids[0]) for e in expected]
    assert sum(n < dec.max_new_tokens for n in lengths) * 2 >= len(prompts)  # the batch shrank
    assert max(lengths) > min(lengths) + 2
    assert batch.token_ids == [e.token_ids[0] for e in expected]
    for got, e in zip(batch.hidden, expected, strict=True):
        assert torch.allclose(got, e.hidden[0], atol=1e-4)
