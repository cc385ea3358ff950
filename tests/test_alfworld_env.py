"""Real-engine tests of the ALFWorld text environment and the expert collector.

They play a handful of small json_2.1.1 games (a reset costs 1-8 s, so the games are picked
for speed). Data comes from ``$ALFWORLD_DATA``, else the offline copy in ``../shared/data``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

import pytest

# find_spec, not importorskip: importing alfworld before ALFWORLD_DATA is set creates ~/.cache/alfworld.
if importlib.util.find_spec("alfworld") is None:
    pytest.skip("alfworld is not installed", allow_module_level=True)

from interlat_bench.benchmarks import alfworld_expert as expert  # noqa: E402
from interlat_bench.benchmarks.alfworld_env import (  # noqa: E402
    TASK_TYPES,
    TextGame,
    expert_to_game,
    game_id,
    game_paths,
    game_to_expert,
    task_of,
    task_type,
)
from interlat_bench.harness.core.errors import UserError  # noqa: E402

SHARED_DATA = Path(__file__).parents[2] / "shared/data/alfworld"

# Small pick-and-place games the translated expert solves in 6-7 steps; both need a "put".
FAST_PUT_GAMES = [
    "pick_and_place_simple-SprayBottle-None-Toilet-418/trial_T20190906_190942_706186",
    "pick_and_place_simple-Pencil-None-Desk-310/trial_T20190909_113054_894334",
]


@pytest.fixture(scope="module", autouse=True)
def data_dir():
    with pytest.MonkeyPatch.context() as mp:
        if not os.environ.get("ALFWORLD_DATA"):
            mp.setenv("ALFWORLD_DATA", str(SHARED_DATA))
        path = Path(os.environ["ALFWORLD_DATA"])
        if not (path / "json_2.1.1").is_dir():
            pytest.skip(f"no ALFWorld games at {path}")
        yield path


def seen_game(task_id: str, data_dir: Path) -> Path:
    return data_dir / "json_2.1.1/valid_seen" / task_id / "game.tw-pddl"


def play_expert(game: TextGame) -> list[str]:
    _, info = game.reset()
    actions, done = [], False
    while not done:
        actions.append(info["expert_action"] or "look")  # alfworld's own fallback
        _, _, done, info = game.step(actions[-1])
    return actions


@pytest.fixture(scope="module")
def small_game(data_dir):
    game = TextGame(seen_game(FAST_PUT_GAMES[0], data_dir))
    yield game
    game.close()


# ---------------------------------------------------------------- no engine


def test_split_sizes(data_dir):
    assert len(game_paths("seen", data_dir)) == 140
    assert len(game_paths("unseen", data_dir)) == 134
    paths = game_paths("train", data_dir)
    assert len(paths) == 600 == len(set(paths))
    assert {task_type(p) for p in paths} == set(TASK_TYPES.values())
    # Task types in turn, each type's games in sorted order: any first N games are spread evenly.
    types = [task_type(p) for p in paths]
    assert types[:6] == sorted(TASK_TYPES.values(), key=lambda t: next(k for k, v in TASK_TYPES.items() if v == t))
    assert all(types[i] == types[i % 6] for i in range(600))  # 100 of each
    for kind in set(types):
        mine = [p for p in paths if task_type(p) == kind]
        assert mine == sorted(mine)
    seen = game_paths("seen", data_dir)[:30]
    assert {task_type(p): [task_type(q) for q in seen].count(task_type(p)) for p in seen} == dict.fromkeys(types[:6], 5)


def test_missing_split_is_a_user_error(tmp_path, data_dir):
    with pytest.raises(UserError, match="not found"):
        game_paths("seen", tmp_path)
    with pytest.raises(UserError, match="unknown ALFWorld split"):
        game_paths("dev", data_dir)


def test_translation_both_ways():
    admissible = ["go to desk 1", "put mug 1 in/on coffeemachine 1"]
    assert expert_to_game("move mug 1 to coffeemachine 1", admissible) == "put mug 1 in/on coffeemachine 1"
    assert expert_to_game("move mug 1 to coffeemachine 1") == "put mug 1 in/on coffeemachine 1"
    assert expert_to_game("take mug 1 from desk 1", admissible) == "take mug 1 from desk 1"
    assert expert_to_game(None, admissible) is None
    assert game_to_expert("put mug 1 in/on coffeemachine 1") == "move mug 1 to coffeemachine 1"
    # Commands the newer grammar kept as they were pass through.
    assert game_to_expert("put egg 1 into bowl 1") == "put egg 1 into bowl 1"
    assert game_to_expert("go to toilet 1") == "go to toilet 1"
    for cmd in ("move spraybottle 2 to toilet 1", "move pen 1 to sidetable 2"):
        assert game_to_expert(expert_to_game(cmd)) == cmd


def test_task_of_and_task_type(data_dir):
    obs = "You are in the middle of a room. Looking quickly around you, you see a desk 1.\nYour task is to: put a clean mug in coffeemachine."
    assert task_of(obs) == "put a clean mug in coffeemachine."
    assert task_type(seen_game(FAST_PUT_GAMES[0], data_dir)) == "pick_and_place"
    assert game_id(seen_game(FAST_PUT_GAMES[0], data_dir)) == FAST_PUT_GAMES[0]


# ---------------------------------------------------------------- real engine


def test_reset_and_step_format(small_game):
    obs, info = small_game.reset()
    assert obs.startswith("You are in the middle of a room.")  # welcome banner stripped
    assert task_of(obs) == "put some spraybottle on toilet."
    assert {"look", "inventory"} <= set(info["admissible"])
    # The expert's first move comes with the reset (alfworld's wrapper would say "look" first).
    assert info["expert_action"] in info["admissible"] and info["expert_action"] != "look"
    assert small_game.last_env_ms > 0 and not info["won"]
    obs, won, done, info = small_game.step("go to toilet 1")
    assert obs.startswith("On the toilet 1, you see")  # "You arrive at loc N." stripped
    assert (won, done, info["steps"]) == (False, False, 1)


def test_invalid_action_costs_a_step(small_game):
    small_game.max_steps = 2
    try:
        small_game.reset()
        obs, won, done, info = small_game.step("fly to the moon")
        assert (obs, won, done, info["steps"]) == ("Nothing happens.", False, False, 1)
        obs, won, done, info = small_game.step("look")
        assert done and not won and small_game.steps == 2
    finally:
        small_game.max_steps = None


@pytest.mark.parametrize("task_id", FAST_PUT_GAMES)
def test_translation_is_what_makes_the_expert_win(task_id, data_dir):
    with TextGame(seen_game(task_id, data_dir), max_steps=20) as game:
        actions = play_expert(game)
        assert game.won and len(actions) <= 7
        assert actions[-1].startswith("put ") and " in/on " in actions[-1]

        # Same game, same cap, alfworld's expert as shipped: it never gets a legal "put".
        game.translate = False
        actions = play_expert(game)
        assert not game.won and game.steps == 20
        # It finds and takes the object, then wanders: its "move" is never admissible, so
        # alfworld falls back to "look" (None here) and random admissible commands.
        assert any(a.startswith("take ") for a in actions)
        assert not any(a.startswith("put ") for a in actions) and "look" in actions[1:]


def test_expert_conversation_format(data_dir):
    record = expert.expert_conversation(seen_game(FAST_PUT_GAMES[1], data_dir), max_steps=50)
    assert set(record) == {"task_id", "game", "task_type", "task", "won", "steps", "conversation"}
    assert record["task_id"] == FAST_PUT_GAMES[1] and record["task_type"] == "pick_and_place"
    assert record["game"] == f"json_2.1.1/valid_seen/{FAST_PUT_GAMES[1]}/game.tw-pddl"
    assert record["won"] and record["task"] == "put some pencil on desk."

    turns = record["conversation"]
    assert [t["role"] for t in turns] == ["user", "assistant"] * record["steps"]
    first = turns[0]["content"]
    assert first.startswith(expert.REACT_INSTRUCTION + "Here is your task. You are in the middle of a room.")
    assert first.endswith("Your task is to: put some pencil on desk.")
    for turn in turns[1::2]:
        assert re.fullmatch(r"Thought: [^\n]+\nAction: [^\n]+", turn["content"])
    assert all(t["content"].startswith("Observation: ") for t in turns[2::2])
    assert re.search(r"\nAction: put pencil \d+ in/on desk \d+$", turns[-1]["content"])


def with_detours(game: Path, detours: int) -> tuple[list[dict], list[int]]:
    """An expert conversation with detours, checked against the expert's own and the engine."""
    plain = expert.expert_conversation(game, max_steps=50)
    record = expert.expert_conversation(game, max_steps=50, detours=detours)
    turns = record["conversation"]
    at = [i for i, t in enumerate(turns) if t.get("context")]
    assert len(at) == record["detours"] <= detours and "detours" not in plain
    # Without the detours and the observations they got, it is the expert's own conversation.
    assert [t for i, t in enumerate(turns) if i not in at and i - 1 not in at] == plain["conversation"]
    action = [t["content"].rpartition("Action: ")[2] for t in turns]
    for i in at:  # one past the receptacle just visited, answered "Nothing happens.", then the expert leaves
        assert action[i] == expert.overrun(action[i - 2]) and action[i - 2].startswith("go to ")
        assert turns[i + 1]["content"] == "Observation: Nothing happens."
        assert action[i + 2].startswith("go to ")
    # The engine rejects each detour where it stands, and no other action; the game is still won.
    with TextGame(game, max_steps=50) as played:
        played.reset()
        for i in range(1, len(turns), 2):
            obs, *_ = played.step(action[i])
            assert (obs == "Nothing happens.") == (i in at), action[i]
        assert played.won
    return turns, at


def test_detours_are_rejected_actions_the_receiver_is_not_trained_on(data_dir):
    from interlat_bench.harness.core import conversation as conv
    from interlat_bench.harness.core.models import tokenizer

    turns, at = with_detours(seen_game(FAST_PUT_GAMES[0], data_dir), detours=2)
    assert [turns[i]["content"].rpartition("Action: ")[2] for i in at] == ["go to toilet 2", "go to garbagecan 2"]
    # Detours are context: none of their tokens is supervised.
    tok = tokenizer("tiny-llama")
    enc = conv.encode(tok, turns, add_generation_prompt=False)
    supervised = tok.decode([t for t, keep in zip(enc.after, enc.labels_after) if keep])
    assert "garbagecan 2" not in supervised and "toilet 2" not in supervised and "countertop 1" in supervised


def test_no_detour_where_the_next_number_exists(data_dir):
    # The expert leaves side table 1 for side table 2, which the room has: "go to sidetable 2"
    # is admissible there, so it is no detour (with_detours plays it to check).
    game = data_dir / "json_2.1.1/train/look_at_obj_in_light-AlarmClock-None-DeskLamp-302" / \
        "trial_T20190908_192756_298295/game.tw-pddl"
    turns, at = with_detours(game, detours=1)
    assert turns[1]["content"].endswith("Action: go to sidetable 1") and turns[3]["content"].endswith("sidetable 2")
    assert 1 + 2 not in at


@pytest.fixture
def two_game_split(tmp_path, data_dir, monkeypatch):
    """A "seen" split of just the two fast games (symlinks into the real data)."""
    root = tmp_path / "alfworld"
    for task_id in FAST_PUT_GAMES:
        trial = root / "json_2.1.1/valid_seen" / task_id
        trial.parent.mkdir(parents=True)
        trial.symlink_to(seen_game(task_id, data_dir).parent, target_is_directory=True)
    monkeypatch.setenv("ALFWORLD_DATA", str(root))
    return root


def test_collect_parallel_equals_serial_resumes_and_is_reused(two_game_split, tmp_path, monkeypatch):
    serial = expert.collect_expert("seen", limit=2, workers=1, out_dir=tmp_path / "a")
    parallel = expert.collect_expert("seen", limit=2, workers=2, out_dir=tmp_path / "b")
    assert serial.relative_to(tmp_path / "a") == parallel.relative_to(tmp_path / "b")  # same content key
    assert serial.read_bytes() == parallel.read_bytes()
    lines = serial.read_text().splitlines()
    assert [json.loads(line)["task_id"] for line in lines] == sorted(FAST_PUT_GAMES)
    assert all(json.loads(line)["won"] for line in lines)
    assert (serial.parent / "DONE").exists()

    def must_not_play(path, max_steps, detours=0):
        raise AssertionError(f"replayed {path}")

    monkeypatch.setattr(expert, "_line_for", must_not_play)
    assert expert.collect_expert("seen", limit=2, workers=2, out_dir=tmp_path / "a") == serial

    # Interrupted run: the second game's line is torn and DONE missing -> only that game is replayed.
    (serial.parent / "DONE").unlink()
    serial.write_text(lines[0] + "\n" + lines[1][:40])
    played = []

    def replay(path, max_steps, detours=0):
        played.append(game_id(path))
        return game_id(path), lines[1]

    monkeypatch.setattr(expert, "_line_for", replay)
    assert expert.collect_expert("seen", limit=2, workers=2, out_dir=tmp_path / "a") == serial
    assert played == [json.loads(lines[1])["task_id"]]
    assert serial.read_text().splitlines() == lines and (serial.parent / "DONE").exists()

    # Another game list or step cap is another file.
    assert expert.collect_expert("seen", limit=1, workers=1, out_dir=tmp_path / "a") != serial
