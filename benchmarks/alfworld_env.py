"""ALFWorld text games (json_2.1.1) on alfworld's own TextWorld engine, one game at a time.

alfworld is imported lazily: importing it creates ``$ALFWORLD_DATA`` (or ``~/.cache/alfworld``)
and writes ``os.environ["ALFWORLD_DATA"]``, so we point it at the game's data folder first.

The games speak the "put X in/on Y" grammar (the one ReAct, ETO and the Interlat paper use);
alfworld 0.4.2's handcoded expert speaks the newer "move X to Y". Without translating, the
expert never sees a legal "put", and alfworld's wrapper silently falls back to "look" and
random play; ``expert_to_game`` / ``game_to_expert`` bridge the two.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import random
import re
import zlib
from pathlib import Path
from time import perf_counter

from interlat_bench.harness.core.errors import UserError
from interlat_bench.harness.core.settings import data_dir

# The engine's answer to a command that does not apply; the turn still counts.
INVALID = "Nothing happens."

SPLITS = {"seen": "valid_seen", "unseen": "valid_unseen", "train": "train"}

# ALFRED task types -> the short names ReAct/ETO use.
TASK_TYPES = {
    "pick_and_place_simple": "pick_and_place",
    "pick_clean_then_place_in_recep": "pick_clean_then_place",
    "pick_heat_then_place_in_recep": "pick_heat_then_place",
    "pick_cool_then_place_in_recep": "pick_cool_then_place",
    "look_at_obj_in_light": "look_at_obj",
    "pick_two_obj_and_place": "pick_two_obj",
}

_MOVE = re.compile(r"^move (.+?) to (.+)$")
_PUT = re.compile(r"^put (.+?) (in/on|into|in) (.+)$")
_GOTO = re.compile(r"^go to (.+)$")
_ARRIVE = re.compile(r"^You arrive at loc \d+\. ")


# ---------------------------------------------------------------- games on disk


DATA_ENV = "ALFWORLD_DATA"


def alfworld_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The ALFWorld data folder (games and PDDL): ``explicit``, else $ALFWORLD_DATA."""
    return data_dir(DATA_ENV, explicit, inside="json_2.1.1", wrong="expected a json_2.1.1/ folder inside",
                    missing=f"ALFWorld data not found: set {DATA_ENV} to a folder with json_2.1.1/ and logic/ "
                    "(offline: ../shared/data/alfworld; online: run `alfworld-download`)")


def game_paths(split: str, data_dir: Path | None = None) -> list[Path]:
    """The ``game.tw-pddl`` files of a split ("seen", "unseen" or "train"), task types taken in
    turn: the first game of each type (types in sorted order), then the second of each, and
    so on, each type's games in sorted order. The first N games (``--limit``, ``n_train``) are
    then spread over the six task types instead of being the first type or two of the list."""
    if split not in SPLITS:
        raise UserError(f"unknown ALFWorld split {split!r}; expected one of {', '.join(SPLITS)}")
    folder = Path(data_dir or alfworld_dir()) / "json_2.1.1" / SPLITS[split]
    if not folder.is_dir():
        raise UserError(f"ALFWorld split {split!r} not found: no folder {folder}")
    # Same exclusions as alfworld's AlfredTWEnv (it never plays movable/sliced trials).
    paths = sorted(p for p in folder.glob("*/*/game.tw-pddl") if not re.search("movable|Sliced", str(p)))
    if not paths:
        raise UserError(f"ALFWorld split {split!r}: no game.tw-pddl files under {folder}")
    by_type: dict[str, list[Path]] = {}
    for path in paths:  # <task type>-<object>-...-<scene>/<trial>/game.tw-pddl
        by_type.setdefault(path.parent.parent.name.split("-")[0], []).append(path)
    turns = itertools.zip_longest(*(by_type[t] for t in sorted(by_type)))
    return [path for turn in turns for path in turn if path is not None]


def game_id(game_path: str | os.PathLike) -> str:
    """ETO-style id: ``<task folder>/<trial folder>`` (unique within a split)."""
    path = Path(game_path)
    return f"{path.parent.parent.name}/{path.parent.name}"


def task_type(game_path: str | os.PathLike) -> str:
    path = Path(game_path)
    traj = path.parent / "traj_data.json"
    long_name = json.loads(traj.read_text())["task_type"] if traj.exists() else path.parent.parent.name.split("-")[0]
    return TASK_TYPES[long_name]


def task_of(observation: str) -> str:
    """The task sentence of an initial observation, e.g. "put a clean mug in coffeemachine."."""
    match = re.search(r"Your task is to:\s*(.+)", observation)
    if not match:
        raise ValueError("observation has no 'Your task is to:' line")
    return match.group(1).strip()


# ---------------------------------------------------------------- grammar translation


def expert_to_game(cmd: str | None, admissible: list[str] | tuple[str, ...] = ()) -> str | None:
    """"move X to Y" (expert) -> "put X in/on Y" (game); other commands pass through."""
    if cmd is None:
        return None
    match = _MOVE.match(cmd)
    if not match:
        return cmd
    obj, recep = match.groups()
    default = f"put {obj} in/on {recep}"
    if default in admissible:
        return default
    # Otherwise whatever preposition this game admits for the same object and receptacle.
    for command in admissible:
        put = _PUT.match(command)
        if put and (put.group(1), put.group(3)) == (obj, recep):
            return command
    return default


def game_to_expert(cmd: str) -> str:
    """"put X in/on Y" (game) -> "move X to Y" (expert); other commands pass through."""
    match = _PUT.match(cmd)
    if match and match.group(2) == "in/on":
        return f"move {match.group(1)} to {match.group(3)}"
    return cmd


# ---------------------------------------------------------------- one game


def _for_agent_intro(feedback: str) -> str:
    # Drop the "-= Welcome to TextWorld, ALFRED! =-" banner, as ReAct/ETO do.
    return "\n".join(part for part in feedback.split("\n\n")[1:] if part)


def _for_agent(feedback: str) -> str:
    # "You arrive at loc 14. On the desk 1, ..." -> "On the desk 1, ..." (ReAct/ETO observations).
    return _ARRIVE.sub("", feedback)


@functools.lru_cache(maxsize=1)
def _alfworld(data_dir: str):
    """Import alfworld (once) with ALFWORLD_DATA already set, and build our expert wrapper."""
    os.environ.setdefault("ALFWORLD_DATA", data_dir)
    import textworld
    from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredExpert, AlfredInfos
    from alfworld.agents.expert import HandCodedAgentFailed, HandCodedAgentTimeout

    class TranslatingExpert(AlfredExpert):
        """alfworld's handcoded-expert wrapper, optionally speaking the game's grammar.

        Writes ``extra.expert_action``: the next admissible command, or None where alfworld
        itself would fall back to "look". The expert's random choices use a private, seeded
        RNG so trajectories are reproducible (and the global ``random`` state is untouched).
        """

        def __init__(self, env=None, translate: bool = True, seed: int = 0):
            super().__init__(env)
            self.translate, self.seed = translate, seed

        def reset(self):
            self._rng_state = random.Random(self.seed).getstate()
            self._alias = None  # (game command we sent, expert command it stands for)
            return super().reset()

        def _gather_infos(self):
            state, admissible = self.state, self.state["admissible_commands"]
            view = state
            if self.translate:
                view = {**state, "admissible_commands": [game_to_expert(c) for c in admissible]}
            outer = random.getstate()
            random.setstate(self._rng_state)
            try:
                last = self.prev_command
                if self._alias and last == self._alias[0]:
                    last = self._alias[1]  # the expert's bookkeeping needs its own "go to X"
                self._alias = None
                if not last:
                    # alfworld reads the intro and answers "look". Asking the expert as if it had
                    # looked gives the same trajectory without that wasted first step.
                    self._handcoded_expert.observe(state["feedback"])
                    last = "look"
                # The last action stays in game grammar: the expert's bookkeeping keys on "put".
                action = None if state["won"] else self._handcoded_expert.act(view, 0, False, last)
            except (HandCodedAgentTimeout, HandCodedAgentFailed):
                action = None
            finally:
                self._rng_state = random.getstate()
                random.setstate(outer)
            if self.translate:
                action = expert_to_game(action, admissible)
                # Receptacles can share a location (e.g. "You are facing the drawer 3, and
                # drawer 2"): standing at drawer 2, "go to drawer 3" is not admissible, and
                # the expert's plan would stall into "look" and random moves. "examine drawer 3"
                # shows the same view from where we stand; the expert is told it went there.
                goto = _GOTO.match(action or "")
                if goto and action not in admissible and f"examine {goto.group(1)}" in admissible:
                    self._alias = (f"examine {goto.group(1)}", action)
                    action = self._alias[0]
            state["extra.expert_action"] = action if action in admissible else None

    return textworld, AlfredDemangler, AlfredInfos, TranslatingExpert


class TextGame:
    """One ALFWorld text game. ``reset()`` then ``step(action)`` until ``done``.

    ``max_steps`` (None = no cap) ends the episode after that many steps; every step counts,
    including invalid actions (the engine answers "Nothing happens."). ``translate=False``
    gives alfworld's untranslated expert (for comparison only). ``expert=False`` skips the
    expert entirely (cheaper steps, ``expert_action`` always None).
    """

    def __init__(
        self,
        game_path: str | os.PathLike,
        max_steps: int | None = None,
        translate: bool = True,
        expert: bool = True,
        seed: int | None = None,
    ):
        self.path = Path(game_path).resolve()
        self.id = game_id(self.path)
        self.max_steps = max_steps
        self.translate = translate
        self.expert = expert
        self.seed = zlib.crc32(self.id.encode()) if seed is None else seed
        self.steps = 0
        self.won = False
        self.last_env_ms = 0.0  # wall time of the last reset()/step(), expert included
        self._env = None
        self._expert = None

    def _start(self):
        # json_2.1.1/<split>/<task>/<trial>/game.tw-pddl -> the data folder is 4 levels up.
        textworld, demangler, infos_wrapper, expert_wrapper = _alfworld(str(self.path.parents[4]))
        infos = textworld.EnvInfos(won=True, admissible_commands=True, facts=self.expert, extras=["gamefile"])
        wrappers = [demangler(shuffle=False), infos_wrapper]
        if self.expert:
            self._expert = expert_wrapper(translate=self.translate, seed=self.seed)
            wrappers.append(self._expert)
        return textworld.start(str(self.path), infos, wrappers=wrappers)

    def reset(self) -> tuple[str, dict]:
        start = perf_counter()
        if self._env is None:
            self._env = self._start()  # loading grounds the PDDL problem once more than reset does
        if self._expert is not None:
            self._expert.translate = self.translate
        state = self._env.reset()
        self.steps, self.won = 0, False
        self.last_env_ms = (perf_counter() - start) * 1000
        return _for_agent_intro(state["feedback"]), self._info(state)

    def step(self, action: str) -> tuple[str, bool, bool, dict]:
        if self._env is None:
            raise RuntimeError("call reset() before step()")
        start = perf_counter()
        state, _, _ = self._env.step(action)
        self.steps += 1
        self.won = bool(state["won"])
        done = self.won or (self.max_steps is not None and self.steps >= self.max_steps)
        self.last_env_ms = (perf_counter() - start) * 1000
        return _for_agent(state["feedback"]), self.won, done, self._info(state)

    def _info(self, state) -> dict:
        return {
            "admissible": list(state["admissible_commands"]),
            "expert_action": state.get("extra.expert_action"),
            "won": bool(state["won"]),
            "steps": self.steps,
            "env_ms": self.last_env_ms,
        }

    def close(self) -> None:
        """Free the engine. Each game dlopens its own copy of fast-downward; we free its task
        (``cleanup``) but keep it mapped, as ``dlclose`` crashes the interpreter at exit.
        Still, a process grows by ~4-5 MB per game played (textworld caches every fact it
        ever built), so long runs should recycle worker processes."""
        if self._env is not None:
            self._env.unwrapped.downward_lib.cleanup()
        self._env = self._expert = None

    def __enter__(self) -> TextGame:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
