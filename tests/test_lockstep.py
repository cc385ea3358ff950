"""Multi-turn episodes played in lockstep (``ReceiverAgent.respond_together``, ALFWorld's
``play_together``): each episode must get the replies it gets when played alone, whatever
the other rows of the batch do and whenever they end."""

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

# Sliding-window layers (Gemma-3) are not batched this way; SmolLM2 and the tiny Qwen are not
# windowed. SmolLM2's greedy replies differ per prompt (the tiny models' are all newlines).
MODEL = "smollm2-135m"
# Prompts and plans of different lengths, so rows are padded differently on every turn.
EPISODES = [(f"Task {i}: put the mug {i} in cabinet {i * 3}." + " Look around." * i,
             Message(kind="text", text="go there " * (1 + 2 * i)), Sample(f"g{i}", f"task {i}")) for i in range(4)]
# Episode i plays TURNS[i] turns, so rows leave the batch at different turns (and the last
# plays its last two turns alone, on the shared cache with its gaps).
TURNS = [2, 5, 3, 7]


def _observation(i: int, turn: int) -> str:
    return f"Observation: you see {'a plate, ' * ((i + turn) % 4)}a mug {turn}."


def _agent(lm, dec, stop: set[int], **kw):
    agent = ReceiverAgent(lm, dec, **kw)
    agent.eos = agent.eos | stop
    return agent


def _alone(lm, dec, stop=frozenset(), **kw):
    out = []
    for i, (prompt, message, sample) in enumerate(EPISODES):
        agent = _agent(lm, dec, stop, **kw)
        agent.begin(prompt, message, sample)
        replies = [agent.respond()]
        replies += [agent.respond(_observation(i, t)) for t in range(1, TURNS[i])]
        out.append((replies, agent.episode_metrics(), agent.history))
    return out


def _together(lm, dec, stop=frozenset(), **kw):
    first = _agent(lm, dec, stop, **kw)
    agents = [first.sibling() for _ in EPISODES]
    for agent, (prompt, message, sample) in zip(agents, EPISODES, strict=True):
        agent.begin(prompt, message, sample)
    replies: list[list[str]] = [[] for _ in EPISODES]
    for turn in range(max(TURNS)):
        playing = [i for i in range(len(EPISODES)) if turn < TURNS[i]]
        observations = [None if turn == 0 else _observation(i, turn) for i in playing]
        for i, reply in zip(playing, ReceiverAgent.respond_together([agents[i] for i in playing], observations)):
            replies[i].append(reply)
    return [(r, a.episode_metrics(), a.history, a.timings_ms()) for r, a in zip(replies, agents, strict=True)]


@pytest.mark.parametrize(("model", "greedy"), [(MODEL, True), ("tiny-qwen", False)])
def test_episodes_played_together_get_the_replies_they_get_alone(model, greedy):
    lm = models.load(model, dtype="float32")
    # Sampling draws among the top 3: a random model's logits are so flat that which tokens
    # make a top 50 turns on float rounding; which of 3 is drawn does not (and still differs
    # from generator to generator).
    # Greedy with prompt lookup, which a row left alone uses (its replies are plain greedy's).
    dec = Decoding(greedy=greedy, top_k=3, top_p=1.0, temperature=1.0, max_new_tokens=10,
                   lookup_tokens=8 if greedy else 0)
    # The tiny model's replies end where it draws a newline (often among its top 3), so
    # rows finish at different steps while others go on drawing.
    stop = set() if greedy else {lm.tokenizer.convert_tokens_to_ids("Ċ")}
    alone, together = _alone(lm, dec, stop, seed=3), _together(lm, dec, stop, seed=3)
    assert [r for r, *_ in together] == [r for r, *_ in alone]
    lengths = {len(r) for replies, *_ in alone for r in replies}
    assert len(lengths) > 2, lengths
    assert len({r for replies, *_ in alone for r in replies}) > 4  # rows differ: a mix-up would show
    for (_, solo, history), (_, metrics, shared_history, times) in zip(alone, together, strict=True):
        assert metrics == {**solo, "eval_batch": len(EPISODES)}
        assert torch.equal(shared_history, history)  # the same tokens entered each episode
        assert times["receiver"] > 0


def test_a_windowed_receiver_is_not_batched_across_episodes():
    lm = models.load("tiny-gemma3", dtype="float32")
    agent = ReceiverAgent(lm, Decoding(max_new_tokens=4))
    assert not agent.can_respond_together() and ReceiverAgent(models.load("tiny-qwen"), agent.dec).can_respond_together()
    agent.begin(*EPISODES[0])
    with pytest.raises(ValueError, match="sliding-window"):
        ReceiverAgent.respond_together([agent], [None])


def test_an_episode_that_goes_on_alone_continues_as_if_it_had_been_alone():
    lm = models.load(MODEL, dtype="float32")
    dec = Decoding(max_new_tokens=8)  # prompt lookup on, as the single turns use it
    agents = [ReceiverAgent(lm, dec).sibling() for _ in EPISODES[:2]]
    for agent, (prompt, message, sample) in zip(agents, EPISODES[:2], strict=True):
        agent.begin(prompt, message, sample)
    first = ReceiverAgent.respond_together(agents, [None, None])
    then = [agents[1].respond(_observation(1, 1)), agents[1].respond(_observation(1, 2))]
    alone = ReceiverAgent(lm, dec)
    alone.begin(*EPISODES[1])
    assert [first[1], *then] == [alone.respond(), alone.respond(_observation(1, 1)),
                                 alone.respond(_observation(1, 2))]


def test_respond_together_refuses_agents_from_different_batches():
    lm = models.load("tiny-qwen", dtype="float32")
    dec = Decoding(max_new_tokens=4, lookup_tokens=0)
    a, b, c = (ReceiverAgent(lm, dec) for _ in range(3))
    for agent, (prompt, message, sample) in zip((a, b, c), EPISODES[:3], strict=True):
        agent.begin(prompt, message, sample)
    ReceiverAgent.respond_together([a, b], [None, None])
    with pytest.raises(ValueError, match="played its turns together"):
        ReceiverAgent.respond_together([a, c], ["Observation: x.", None])


def _episodes(db):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("""select sample_id, success, steps, metrics->'actions', metrics->'transcript',
                                     metrics->>'eval_batch' from samples order by 1""").fetchall()
    finally:
        con.close()


@pytest.mark.slow
def test_alfworld_games_played_together_are_the_games_played_one_at_a_time(results_env, tmp_path):
    """Real ALFWorld games: --episode-batch 3 plays 4 games as a batch of 3 in lockstep and one
    alone; the actions, transcripts and outcomes are those of --episode-batch 1."""
    args = ["run", "-m", "text_zeroshot", "-t", "alfworld", "--splits", "seen", "--limit", "4", "--max-steps", "3",
            "--receiver", MODEL, "--sender", "tiny-llama", "--max-new-tokens", "12",
            "--param", "plan_tokens=6", "--no-leaderboard"]
    runner = CliRunner()
    one = runner.invoke(app, [*args, "--episode-batch", "1"])
    assert one.exit_code == 0, one.output
    other = tmp_path / "together" / "results.duckdb"
    together = runner.invoke(app, [*args, "--episode-batch", "3", "--db", str(other)])
    assert together.exit_code == 0, together.output
    alone, batched = _episodes(results_env), _episodes(other)
    assert len(alone) == 4 and len({row[3] for row in alone}) > 1
    assert [row[:5] for row in batched] == [row[:5] for row in alone]
    assert sorted(str(row[5]) for row in batched) == ["3", "3", "3", "None"]
    assert {row[5] for row in alone} == {None}


def test_games_play_one_at_a_time_on_a_cpu_by_default():
    from interlat_bench.harness import playing

    # Measured on 2 CPU cores (bench/alfworld_episodes.py): lockstep is no reliable gain there.
    assert playing.EPISODE_BATCH["cpu"] == 1 and playing.EPISODE_BATCH["cuda"] > 1
    expected = playing.EPISODE_BATCH["cuda" if torch.cuda.is_available() else "cpu"]
    assert playing.episode_batch_default() == expected


@pytest.mark.slow
def test_a_lockstep_batch_that_fails_is_played_one_game_at_a_time(results_env, monkeypatch):
    """If a batched turn raises (e.g. out of memory), the games not yet finished are played
    again one at a time: every game is recorded once, without an error."""
    calls = []
    together = ReceiverAgent.respond_together

    def fail_on_third_turn(agents, observations):
        calls.append(len(agents))
        if len(calls) == 3:
            raise RuntimeError("out of memory (simulated)")
        return together(agents, observations)

    monkeypatch.setattr(ReceiverAgent, "respond_together", staticmethod(fail_on_third_turn))
    result = CliRunner().invoke(app, ["run", "-m", "no_comm_zeroshot", "-t", "alfworld", "--splits", "seen",
                                      "--limit", "3", "--max-steps", "4", "--receiver", "tiny-qwen",
                                      "--max-new-tokens", "4", "--episode-batch", "3", "--no-leaderboard"])
    assert result.exit_code == 0, result.output
    assert calls == [3, 3, 3]
    assert "playing 3 episodes together failed (RuntimeError: out of memory (simulated)); playing the 3 left " \
        "one at a time" in result.output + result.stderr
    rows = _episodes(results_env)
    assert [row[2] for row in rows] == [4, 4, 4]  # every game played to the step cap, once
    assert {row[5] for row in rows} == {None}  # the replays ran one game at a time
    con = duckdb.connect(str(results_env), read_only=True)
    try:
        assert con.execute("select count(*) from samples where error is not null").fetchone() == (0,)
    finally:
        con.close()
