"""Expert ALFWorld conversations in the ETO/ReAct format, for receiver training.

alfworld's handcoded expert plays each game (with the grammar translation, see
``benchmarks.alfworld_env``); every step becomes an assistant turn "Thought: ...\\nAction: ..."
followed by a user turn "Observation: ...". ``collect_expert`` runs a split in worker
processes into a content-addressed, resumable JSONL file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing
import os
import time
from pathlib import Path

from interlat_bench.benchmarks.alfworld_env import (
    INVALID,
    TextGame,
    alfworld_dir,
    game_id,
    game_paths,
    task_of,
    task_type,
)
from interlat_bench.harness.core.atomic import write_text
from interlat_bench.harness.core.settings import cache_dir

# Bump when the conversation format or the expert protocol changes: it is part of the cache key.
EXPERT_VERSION = 1

REACT_INSTRUCTION = (
    "You are an agent in a simulated household and must complete a task by acting in it. "
    "Each turn, reply with one action; the environment then answers with an observation "
    "describing what happened. Reply in exactly this format:\n"
    "Thought: <a short reasoning about what to do next>\n"
    "Action: <one action>\n\n"
    "The actions you can use (fill in the names you see in the observations):\n"
    "- go to {recep}\n"
    "- open {recep}\n"
    "- close {recep}\n"
    "- take {obj} from {recep}\n"
    "- put {obj} in/on {recep}\n"
    "- use {obj} (toggle an appliance such as a desk lamp)\n"
    "- clean {obj} with {recep}\n"
    "- heat {obj} with {recep}\n"
    "- cool {obj} with {recep}\n"
    "- examine {obj or recep}\n"
    "- look\n"
    "- inventory\n"
    "An action that does not apply gives \"Nothing happens.\" and still uses up a turn.\n\n"
)

# One short, generic thought per verb: the expert has no reasoning of its own to show.
_THOUGHTS = {
    "go": "I should go to the {rest} and see what is there.",
    "open": "The {rest} is closed; I open it to look inside.",
    "close": "I close the {rest} again.",
    "take": "I take the {obj} from the {recep}.",
    "put": "I put the {obj} in/on the {recep}.",
    "use": "I turn on the {rest}.",
    "clean": "I clean the {obj} with the {recep}.",
    "heat": "I heat the {obj} with the {recep}.",
    "cool": "I cool the {obj} with the {recep}.",
    "examine": "I examine the {rest} more closely.",
    "look": "I look around me.",
    "inventory": "I check what I am carrying.",
}


def thought_for(action: str) -> str:
    verb, _, rest = action.partition(" ")
    if verb == "go":
        rest = rest.removeprefix("to ")
    obj, recep = rest, ""
    for sep in (" from ", " in/on ", " with "):
        if sep in rest:
            obj, recep = rest.split(sep, 1)
            break
    template = _THOUGHTS.get(verb, "I try: {rest}.")
    return template.format(rest=rest, obj=obj, recep=recep)


def overrun(action: str) -> str | None:
    """The next-numbered receptacle after a "go to": "go to sidetable 2" -> "go to sidetable 3"."""
    head, _, number = action.rpartition(" ")
    return f"{head} {int(number) + 1}" if action.startswith("go to ") and number.isdigit() else None


def expert_conversation(game_path: str | os.PathLike, max_steps: int = 50, detours: int = 0) -> dict:
    """Play one game with the handcoded expert; return the episode as a conversation.

    ``detours``: up to this many rejected actions, each right after the expert has gone to the
    highest-numbered receptacle of its kind and is about to leave it: the agent tries the next
    number, which the room does not have ("go to sidetable 3" with two side tables; not among
    the admissible commands), the observation is "Nothing happens.", and the expert goes on.
    The rejected turn is context (``"context": True``: not trained on), so a receiver learns to
    recover from the mistake small receivers make most, counting on past the last receptacle,
    without learning to make it. The detour is written into the conversation, not played: an
    inadmissible command leaves the game as it was, while alfworld's handcoded expert loses
    track of where it is after one (measured: games of 9 steps took 14 to 53)."""
    game = TextGame(game_path, max_steps=max_steps)
    try:
        observation, info = game.reset()
        conversation = [{"role": "user", "content": REACT_INSTRUCTION + "Here is your task. " + observation}]
        task = task_of(observation)
        won, done, made, last = False, False, 0, None
        while not done:
            wrong = overrun(last) if last and made < detours else None
            leaves = (info["expert_action"] or "").startswith("go to ")
            if wrong and leaves and wrong not in info["admissible"]:
                conversation += [{"role": "assistant", "content": f"Thought: {thought_for(wrong)}\nAction: {wrong}",
                                  "context": True},
                                 {"role": "user", "content": f"Observation: {INVALID}"}]
                made += 1
            # alfworld's own fallback when the expert has no admissible command.
            action = info["expert_action"] or "look"
            conversation.append({"role": "assistant", "content": f"Thought: {thought_for(action)}\nAction: {action}"})
            feedback, won, done, info = game.step(action)
            last = action
            if not done:  # ETO conversations end on the assistant's last action
                conversation.append({"role": "user", "content": f"Observation: {feedback}"})
    finally:
        game.close()
    path = Path(game_path)
    return {
        "task_id": game_id(path),
        "game": path.relative_to(path.parents[4]).as_posix(),  # json_2.1.1/<split>/<task>/<trial>/...
        "task_type": task_type(path),
        "task": task,
        "won": won,
        "steps": game.steps,
        **({"detours": made} if detours else {}),  # records without detours keep their bytes
        "conversation": conversation,
    }


def _line_for(game_path: str, max_steps: int, detours: int = 0) -> tuple[str, str]:
    """Worker entry point (top level so 'spawn' workers can import it)."""
    record = expert_conversation(game_path, max_steps, detours)
    return record["task_id"], json.dumps(record, ensure_ascii=False)


def _read_lines(path: Path) -> dict[str, str]:
    lines = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                lines[json.loads(line)["task_id"]] = line
            except (ValueError, KeyError):
                continue  # a torn line from an interrupted writer: that game is redone
    return lines


def _write_lines(path: Path, ids: list[str], lines: dict[str, str]) -> None:
    # Whole file through a temp + rename, in game order: readers never see half a line,
    # and serial and parallel runs produce the same bytes.
    write_text(path, "".join(lines[i] + "\n" for i in ids if i in lines))


def collect_expert(
    split: str = "train",
    limit: int | None = None,
    workers: int = 2,
    out_dir: str | os.PathLike | None = None,
    max_steps: int = 50,
    detours: int = 0,
) -> Path:
    """Expert conversations for the first ``limit`` games of a split, one JSON line per game.

    Written to ``<out_dir or cache>/expert/<key>/trajectories.jsonl`` where key hashes the split,
    the game ids, ``max_steps``, ``detours`` (when not 0) and ``EXPERT_VERSION``. An interrupted
    run resumes (games already in the file are skipped); a finished one (``DONE`` marker) is
    returned as is.
    """
    paths = game_paths(split, alfworld_dir())[:limit]
    ids = [game_id(p) for p in paths]
    key = {"split": split, "games": sorted(ids), "max_steps": max_steps, "version": EXPERT_VERSION}
    if detours:  # only when used, so existing collections keep their keys
        key["detours"] = detours
    key_src = json.dumps(key)
    folder = Path(out_dir or cache_dir()) / "expert" / hashlib.sha256(key_src.encode()).hexdigest()[:16]
    out = folder / "trajectories.jsonl"
    if (folder / "DONE").exists():
        return out
    folder.mkdir(parents=True, exist_ok=True)

    lines = _read_lines(out)
    todo = [str(p) for p, i in zip(paths, ids) if i not in lines]
    pending, last_write = 0, time.monotonic()

    def record(task_id: str, line: str) -> None:
        nonlocal pending, last_write
        lines[task_id] = line
        pending += 1
        if pending >= 8 or time.monotonic() - last_write > 30:
            _write_lines(out, ids, lines)
            pending, last_write = 0, time.monotonic()

    try:
        if workers <= 1 or len(todo) <= 1:
            for path in todo:
                record(*_line_for(path, max_steps, detours))
        else:
            # spawn, not fork: the parent may hold torch/OpenMP threads that a fork would break.
            # Workers are recycled as every game leaves ~5 MB behind in its process; this is
            # multiprocessing.Pool because ProcessPoolExecutor(max_tasks_per_child=...) deadlocks
            # once a worker retires (CPython gh-115634, 3.11 and later).
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(min(workers, len(todo)), maxtasksperchild=50) as pool:  # exit = terminate
                play = functools.partial(_line_for, max_steps=max_steps, detours=detours)
                for task_id, line in pool.imap_unordered(play, todo):
                    record(task_id, line)
    finally:
        _write_lines(out, ids, lines)
    (folder / "DONE").write_text(f"{len(ids)} games\n")
    return out
