"""ALFWorld on the real TextWorld engine: the receiver plays ReAct-style episodes.

Splits: ``seen`` (valid_seen, 140 games) and ``unseen`` (valid_unseen, 134). Training
conversations come from alfworld's handcoded expert on train games (benchmarks.alfworld_expert).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from interlat_bench.benchmarks.alfworld_env import INVALID, TextGame, game_id, game_paths, task_type
from interlat_bench.benchmarks.base import Agent, Benchmark, Record, Sample
from interlat_bench.harness.core.errors import UserError
from interlat_bench.harness.core.message import Message
from interlat_bench.harness.core.params import POSITIVE_INT, one_of
from interlat_bench.harness.core.prompts import ALFWORLD_PLAN_PROMPT
from interlat_bench.harness.core.registry import register_benchmark

_TASK_RULE = re.compile(r'"task":\s*\[\s*\{\s*"rhs":\s*"Your task is to: ([^"]+)"')
_ACTION = re.compile(r"^\s*(?:\d+\.\s*)?action\s*:\s*(.+?)\s*$", re.IGNORECASE)


@cache
def task_text(path: Path) -> str:
    """The task sentence, read from the game's grammar (no engine start, which costs seconds)."""
    grammar = json.loads(path.read_text())["grammar"]
    match = _TASK_RULE.search(grammar)
    if not match:
        raise UserError(f"{path}: no 'Your task is to:' rule in the game grammar")
    return match.group(1).strip()


def parse_action(reply: str) -> str:
    """The action of a ReAct reply: the first line with "Action: ...", else the first line."""
    lines = [line for line in reply.splitlines() if line.strip()]
    for line in lines:
        match = _ACTION.match(line)
        if match:
            return match.group(1).strip().rstrip(".").lower() or "look"
    return lines[0].strip().lower() if lines else "look"


def expert_facts(actions: list[str]) -> str:
    """The privileged facts of ``sender_view=expert``, as the sender's planner prompt adds them."""
    steps = "\n".join(f"{i}. {a}" for i, a in enumerate(actions, 1)) or "(none recorded)"
    return ("Only you can see this: an expert solved this exact game with these actions, in this order. "
            "Your plan should give them, in order:\n" + steps)


def _actions_of(record: dict) -> list[str]:
    """The expert's played actions in a recorded conversation (detours, marked context, left out)."""
    return [parse_action(t["content"]) for t in record["conversation"]
            if t["role"] == "assistant" and not t.get("context")]


def _expert_actions(path: Path) -> dict[str, list[str]]:
    with open(path, encoding="utf-8") as f:
        return {rec["task_id"]: _actions_of(rec) for rec in map(json.loads, f)}


@register_benchmark
class AlfworldBenchmark(Benchmark):
    name = "alfworld"
    splits = ("seen", "unseen")
    default_splits = ("seen", "unseen")
    planner_prompt = ALFWORLD_PLAN_PROMPT  # the SPEC's (section 2), from harness.core.prompts
    plan_temperature = 0.7  # SPEC section 2
    # action: "generate" (the receiver writes its reply, as in the paper) or "rank" (a
    # diagnostic: it picks the admissible command it finds most likely; tables label it).
    # sender_view: "task" (the paper: the sender sees what the receiver sees) or "expert" (an
    # informed sender: its planner prompt also lists the handcoded expert's actions for this
    # game, which the receiver never sees; a channel that carries the plan then carries a plan
    # worth following, so methods differ even with small receivers. Tables label it.)
    defaults = {"max_steps": 20, "action": "generate", "sender_view": "task"}
    param_checks = {"max_steps": POSITIVE_INT, "action": one_of("generate", "rank"),
                    "sender_view": one_of("task", "expert")}
    diagnostics = {"action": "rank", "sender_view": "expert"}
    after_run_metrics = ("steps_success", "steps", "valid_actions")  # SPEC section 7: steps over successes and all
    unkeyed_defaults = {"sender_view": "task"}
    reply_tokens = 48  # one "Thought: ...\nAction: ..." turn
    cpu_limit = 2
    # Receiver training on CPU needs longer sequences than MATH: episodes are multi-turn.
    train_overrides = {"max_len": 384, "n_train": 8}

    @property
    def max_steps(self) -> int:
        return int(self.params.get("max_steps", 20))

    @property
    def max_turns(self) -> int:
        return self.max_steps

    def data_files(self, split: str) -> list[Path]:
        """The games of a split: each game file and the trial record beside it."""
        return [f for p in game_paths(split) for f in (p, p.parent / "traj_data.json") if f.exists()]

    @classmethod
    def report_tables(cls, db, baseline, marks):
        from interlat_bench.results import report

        return [report.alfworld_table(db, baseline, marks)]  # the paper's Table 1 layout

    def samples(self, split: str, limit: int | None = None) -> list[Sample]:
        if split not in self.splits:
            raise UserError(f"alfworld has no split {split!r} (choose from {', '.join(self.splits)})")
        paths = game_paths(split)[:limit]
        samples = [Sample(game_id(p), task_text(p), {"game": str(p), "task_type": task_type(p)}) for p in paths]
        if self.informed_sender:
            from interlat_bench.benchmarks.alfworld_expert import collect_expert

            actions = _expert_actions(collect_expert(split, limit=limit))
            for sample in samples:
                sample.data["sender_facts"] = expert_facts(actions.get(sample.id, []))
        return samples

    def train_samples(self, limit: int | None = None, detours: int = 0) -> list[Sample]:
        from interlat_bench.benchmarks.alfworld_expert import collect_expert

        path = collect_expert("train", limit=limit, detours=detours)
        out = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                if rec["won"]:  # learn from successful demonstrations only
                    data = {"conversation": rec["conversation"], "task_type": rec["task_type"]}
                    if self.informed_sender:
                        data["sender_facts"] = expert_facts(_actions_of(rec))
                    out.append(Sample(rec["task_id"], rec["task"], data))
        return out

    @property
    def informed_sender(self) -> bool:
        return self.params.get("sender_view", "task") == "expert"

    @property
    def plays_together(self) -> bool:
        """Whether several games may be played in lockstep (``play_together``): with free
        generation; the ranking diagnostic plays one game at a time."""
        return self.params.get("action", "generate") == "generate"

    def action_reply(self, action: str) -> str:
        return f"Action: {action}"  # the ReAct turn's action line, as the expert's conversations write it

    def play(self, sample: Sample, agent: Agent, message) -> Record:
        episode = _Episode(self, sample, agent, message)
        try:
            episode.start()
            while not episode.done:
                if self.params.get("action") == "rank":
                    options = sorted(episode.info.get("admissible") or [])
                    reply = agent.choose(episode.feedback, [self.action_reply(a) for a in options], episode.info)
                else:
                    reply = agent.respond(episode.feedback, episode.info)
                episode.act(reply)
        finally:
            episode.close()
        return episode.record()

    def play_together(self, samples: list[Sample], agents: list[Agent], messages: list[Message],
                      respond_together) -> Iterator[tuple[int, Record]]:
        """Play several games in lockstep, one agent each: every turn, the replies of all games
        still going come from one ``respond_together(agents, observations)`` call (one
        batched decode), then each game takes its step. Yields (index, record) as each game
        ends. A game whose engine fails ends with an error record; the others go on."""
        episodes = [_Episode(self, s, a, m) for s, a, m in zip(samples, agents, messages, strict=True)]
        try:
            playing = []
            for i, episode in enumerate(episodes):
                try:
                    episode.start()
                    playing.append(i)
                except Exception as exc:
                    yield i, episode.failed(exc)
            while playing:
                replies = respond_together([agents[i] for i in playing], [episodes[i].feedback for i in playing])
                still = []
                for i, reply in zip(playing, replies, strict=True):
                    try:
                        episodes[i].act(reply)
                    except Exception as exc:
                        yield i, episodes[i].failed(exc)
                        continue
                    if episodes[i].done:
                        episodes[i].close()
                        yield i, episodes[i].record()
                    else:
                        still.append(i)
                playing = still
        finally:
            for episode in episodes:
                episode.close()


class _Episode:
    """One game as an agent plays it: the engine, what the agent is told, what it did."""

    def __init__(self, bench: AlfworldBenchmark, sample: Sample, agent: Agent, message: Message):
        self.bench, self.sample, self.agent, self.message = bench, sample, agent, message
        self.game = TextGame(sample.data["game"], max_steps=bench.max_steps, expert=agent.needs_expert)
        self.feedback: str | None = None  # the observation the next reply answers (None: the task)
        self.info: dict = {}
        self.actions: list[str] = []
        self.invalid = 0
        self.won = self.done = False
        self.env_ms = 0.0

    def start(self) -> None:
        from interlat_bench.benchmarks.alfworld_expert import REACT_INSTRUCTION

        observation, self.info = self.game.reset()
        self.env_ms += self.game.last_env_ms
        self.agent.begin(REACT_INSTRUCTION + "Here is your task. " + observation, self.message, self.sample)

    def act(self, reply: str) -> None:
        action = parse_action(reply)
        observation, self.won, self.done, self.info = self.game.step(action)
        self.env_ms += self.game.last_env_ms
        self.actions.append(action)
        self.invalid += observation.strip() == INVALID
        self.feedback = f"Observation: {observation}"

    def close(self) -> None:
        self.game.close()

    def record(self) -> Record:
        actions, invalid = self.actions, self.invalid
        return Record(
            sample_id=self.sample.id, success=self.won, score=float(self.won), steps=self.game.steps,
            metrics={"task_type": self.sample.data["task_type"], "invalid_actions": invalid, "actions": actions,
                     # Share of this episode's actions the engine accepted ("Nothing happens." is invalid).
                     "valid_actions": (len(actions) - invalid) / len(actions) if actions else None,
                     "max_steps": self.bench.max_steps, "turns": len(actions), **self.agent.episode_metrics()},
            timings_ms={**self.agent.timings_ms(), "env": self.env_ms},
        )

    def failed(self, exc: Exception) -> Record:
        self.close()
        return Record.from_error(self.sample.id, exc)
