"""Real ALFWorld episodes through the harness: reference policies, resume, parallel = serial."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

pytest.importorskip("alfworld")

from interlat_bench.benchmarks.alfworld import parse_action, task_text  # noqa: E402
from interlat_bench.benchmarks.alfworld_env import TextGame, game_paths, task_of  # noqa: E402
from interlat_bench.harness.cli import app  # noqa: E402

runner = CliRunner()


@pytest.mark.parametrize("reply,action", [
    ("Thought: I need a mug.\nAction: go to countertop 1", "go to countertop 1"),
    ("Action: take mug 1 from countertop 1.\nObservation: made up", "take mug 1 from countertop 1"),
    ("I think so.\n  action:  OPEN fridge 1  \nAction: look", "open fridge 1"),
    ("go to sinkbasin 1\nmore text", "go to sinkbasin 1"),
    ("", "look"),
])
def test_parse_action(reply, action):
    assert parse_action(reply) == action


def test_task_text_from_grammar_matches_the_engine():
    for path in game_paths("unseen")[:2]:
        with TextGame(path, expert=False) as game:
            observation, _ = game.reset()
        assert task_text(path) == task_of(observation)


def _rows(db):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(
            "select method, split, sample_id, success, steps, metrics from samples join runs using (run_key) "
            "order by 1, 2, 3").fetchall()
    finally:
        con.close()


def test_reference_policies_play_real_games_and_resume(results_env, tmp_path):
    args = ["run", "-m", "oracle,random", "-t", "alfworld", "--splits", "seen,unseen", "--limit", "3",
            "--max-steps", "12", "--no-leaderboard"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = _rows(results_env)
    assert len(rows) == 12  # 2 methods x 2 splits x 3 games
    for _method, _split, _sid, success, steps, metrics in rows:
        metrics = json.loads(metrics)
        assert 1 <= steps <= 12 and metrics["max_steps"] == 12
        assert steps == len(metrics["actions"])
        # Admissible commands only (expert's or drawn from the list): the engine accepts each.
        assert metrics["valid_actions"] == (steps - metrics["invalid_actions"]) / steps == 1.0
        if not success:
            assert steps == 12  # failures run to the cap
    oracle_wins = sum(r[3] for r in rows if r[0] == "oracle")
    random_wins = sum(r[3] for r in rows if r[0] == "random")
    assert oracle_wins >= 3 and random_wins <= 1
    con = duckdb.connect(str(results_env), read_only=True)
    env_ms = con.execute("select count(*) from timings where stage = 'env' and ms > 0").fetchone()[0]
    con.close()
    assert env_ms == 12
    result = runner.invoke(app, args)
    assert "0 samples computed" in result.output

    # Worker processes give exactly the serial episodes (seeded per game, not per order).
    serial_db = tmp_path / "serial.duckdb"
    result = runner.invoke(app, ["run", "-m", "random", "-t", "alfworld", "--splits", "seen", "--limit", "3",
                                 "--max-steps", "12", "--workers", "1", "--db", str(serial_db), "--no-leaderboard"])
    assert result.exit_code == 0, result.output
    parallel = [(r[2], json.loads(r[5])["actions"]) for r in rows if r[0] == "random" and r[1] == "seen"]
    serial = [(r[2], json.loads(r[5])["actions"]) for r in _rows(serial_db)]
    assert serial == parallel


def test_rank_mode_acts_only_with_admissible_commands(results_env):
    """action=rank on the real engine: an untrained tiny receiver still only takes admissible
    commands (every action valid), and the mode is part of the run key."""
    args = ["run", "-m", "no_comm_zeroshot", "-t", "alfworld", "--splits", "seen", "--limit", "1",
            "--max-steps", "3", "--receiver", "tiny-llama", "--no-leaderboard"]
    assert runner.invoke(app, [*args, "--setting", "action=rank"]).exit_code == 0
    assert runner.invoke(app, args).exit_code == 0
    con = duckdb.connect(str(results_env), read_only=True)
    by_mode = dict(con.execute("""select spec->'benchmark_params'->>'action', s.metrics from samples s
                                  join runs using (run_key)""").fetchall())
    con.close()
    assert sorted(by_mode) == ["generate", "rank"]
    ranked = json.loads(by_mode["rank"])
    assert ranked["valid_actions"] == 1.0 and ranked["turns"] == 3


def _children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:  # field 4: the parent's pid
                found.add(int(entry))
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="worker death signal is Linux-only")
def test_sigkill_with_workers_ends_them_marks_the_run_interrupted_and_resume_loses_nothing(results_env):
    cmd = [sys.executable, "-m", "interlat_bench.harness.entry", "run", "-m", "random", "-t", "alfworld",
           "--splits", "seen", "--limit", "8", "--max-steps", "60", "--workers", "2", "--no-leaderboard"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        workers = set()
        while time.monotonic() < deadline and len(workers) < 2:
            workers = {c for c in _children(proc.pid) if "spawn_main" in _cmdline(c)}
            time.sleep(0.2)
        assert len(workers) == 2, "no worker processes started"
        time.sleep(3)  # mid-episode
        proc.kill()
        proc.wait(timeout=30)
        end = time.monotonic() + 3
        while time.monotonic() < end and not all(_gone(w) for w in workers):
            time.sleep(0.1)
        assert all(_gone(w) for w in workers), "workers outlived the killed run"
    finally:
        proc.kill()
        proc.stdout.close()
    result = runner.invoke(app, ["ingest"])
    assert result.exit_code == 0 and "'interrupted': 1" in result.output, result.output
    con = duckdb.connect(str(results_env), read_only=True)
    assert con.execute("select status from runs").fetchall() == [("interrupted",)]
    con.close()
    result = runner.invoke(app, cmd[3:])  # resume: the rest, nothing twice
    assert result.exit_code == 0, result.output
    con = duckdb.connect(str(results_env), read_only=True)
    ids = [r[0] for r in con.execute("select sample_id from samples").fetchall()]
    status = con.execute("select status from runs").fetchall()
    con.close()
    assert len(ids) == len(set(ids)) == 8 and status == [("complete",)]


def test_train_command_trains_an_alfworld_receiver(results_env):
    """`train` needs no split: training reads the train split whichever split is evaluated."""
    result = runner.invoke(app, ["train", "-m", "no_comm", "-t", "alfworld", "--receiver", "tiny-llama",
                                 "--param", "n_train=1"])
    assert result.exit_code == 0, result.output
    assert "trained no_comm (empty slot) receiver on 1 conversations" in result.output
    assert "receiver checkpoint:" in result.output


def test_show_prints_the_stored_transcript_of_an_episode(results_env):
    args = ["run", "-m", "latent", "-t", "alfworld", "--splits", "seen", "--limit", "1", "--max-steps", "3",
            "--receiver", "tiny-llama", "--sender", "tiny-llama", "--param", "n_train=1", "--param", "plan_tokens=6",
            "--max-new-tokens", "6", "--no-leaderboard"]
    assert runner.invoke(app, args).exit_code == 0
    con = duckdb.connect(str(results_env), read_only=True)
    key, sid, steps, transcript = con.execute(
        "select run_key, sample_id, steps, metrics->'transcript' from samples").fetchone()
    con.close()
    turns = json.loads(transcript)
    assert [t["role"] for t in turns[:2]] == ["plan", "user"]
    assert "[slot: 6 latent rows]" in turns[1]["content"]
    assert sum(t["role"] == "assistant" for t in turns) == steps == 3
    assert sum(t["role"] == "user" for t in turns) == 3  # the task, then an observation after each reply
    result = runner.invoke(app, ["show", key[:6], sid.split("/")[-1]])
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"sample {sid}: success False" in out and "[plan]" in out and out.count("[assistant]") == 3
    assert turns[2]["content"].strip()[:30] in out or turns[3]["content"][:30] in out
    missing = runner.invoke(app, ["show", key[:6], "no-such-sample"])
    assert missing.exit_code != 0 and "expected one sample, found none" in missing.output + missing.stderr


def test_episode_workers_play_the_episodes_one_process_plays(results_env, tmp_path):
    """--episode-workers 2: LLM episodes in two processes, each with its own receiver, give the
    records one process gives (a text plan from the sender, replies that differ per game)."""
    args = ["run", "-m", "text_zeroshot", "-t", "alfworld", "--splits", "seen", "--limit", "3", "--max-steps", "3",
            "--receiver", "tiny-gemma3", "--sender", "tiny-llama", "--max-new-tokens", "8",
            "--param", "plan_tokens=6", "--no-leaderboard"]
    assert runner.invoke(app, args).exit_code == 0
    spread_db = tmp_path / "spread" / "results.duckdb"
    result = runner.invoke(app, [*args, "--episode-workers", "2", "--db", str(spread_db)])
    assert result.exit_code == 0, result.output
    assert "playing 3 episodes in 2 processes" in result.output + result.stderr

    def episodes(db):
        con = duckdb.connect(str(db), read_only=True)
        try:
            return con.execute("""select sample_id, success, metrics->'actions', metrics->'transcript'
                                  from samples order by 1""").fetchall()
        finally:
            con.close()

    alone, spread = episodes(results_env), episodes(spread_db)
    assert len(alone) == 3 and len({row[2] for row in alone}) > 1
    assert spread == alone
