"""What every benchmark provides: samples of a split, and how to play one sample."""

from __future__ import annotations

import hashlib
import os
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Protocol

from interlat_bench.harness.core.message import Message
from interlat_bench.harness.core.params import Check
from interlat_bench.harness.core.prompts import DEFAULT_PLAN_PROMPT


@dataclass(frozen=True)
class Sample:
    """One problem / game. ``task`` is what the sender plans for; ``data`` is benchmark-private."""

    id: str
    task: str
    data: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass
class Record:
    """The outcome of playing one sample; one row of the ``samples`` table."""

    sample_id: str
    success: bool | None = None
    score: float | None = None
    steps: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    @classmethod
    def from_error(cls, sample_id: str, exc: Exception) -> Record:
        """The record of a sample that failed (call it where ``exc`` is being handled)."""
        return cls(sample_id=sample_id, error=f"{type(exc).__name__}: {exc}",
                   metrics={"traceback": traceback.format_exc(limit=5)})


class Agent(Protocol):
    """The acting side of an episode, produced by a method.

    ``begin`` opens an episode with the first user turn (instruction + task) and the
    message for the slot; ``respond`` feeds the next observation (None on the first call)
    and returns the agent's reply text. ``info`` carries benchmark facts a reference policy
    may use (admissible commands, the expert's action); LLM agents ignore it.
    ``needs_expert``: the benchmark must compute the expert's action for ``info`` (it costs
    a planner call per step, so only the oracle asks for it).
    """

    needs_expert: bool

    def begin(self, prompt: str, message: Message, sample: Sample) -> None: ...

    def respond(self, observation: str | None = None, info: dict | None = None) -> str: ...

    def choose(self, observation: str | None, options: list[str], info: dict | None = None) -> str:
        """Reply with one of ``options`` (a benchmark's ranking diagnostic, e.g. ALFWorld's
        ``action=rank``); an agent that already acts within them may just ``respond``."""
        ...

    def timings_ms(self) -> dict[str, float]: ...

    def prefetch(self, episodes: list[tuple[str, Message, Sample]]) -> None:
        """Optional: decode the first replies of several single-reply episodes (prompt,
        message, sample) together, ahead of their ``begin``/``respond``."""
        ...

    def episode_metrics(self) -> dict[str, Any]:
        """Facts about the episode's replies (e.g. how many the token cap cut); {} for none."""
        ...


class Benchmark:
    name: ClassVar[str]
    splits: ClassVar[tuple[str, ...]]
    default_splits: ClassVar[tuple[str, ...]]  # evaluated when --splits is not given
    # The prompt the sender plans from, given the sample's task text (see harness.core.prompts).
    planner_prompt: ClassVar[str] = DEFAULT_PLAN_PROMPT
    reply_tokens: ClassVar[int] = 256  # receiver tokens per reply unless --max-new-tokens
    cpu_limit: ClassVar[int | None] = None  # samples per split on a CPU unless --limit
    # Settings that change outcomes, with their defaults (they enter the run key).
    defaults: ClassVar[dict[str, Any]] = {}
    # Settings added after runs were recorded: at these values they stay out of the run key,
    # so the runs recorded before them keep their keys (and their results).
    unkeyed_defaults: ClassVar[dict[str, Any]] = {}
    # Changes to the receiver-training preset this benchmark needs (e.g. longer sequences).
    train_overrides: ClassVar[dict[str, Any]] = {}
    # This benchmark's defaults for method settings a method declares (e.g. shorter plans);
    # the user's --param still wins. They enter the run key like any method setting.
    method_defaults: ClassVar[dict[str, Any]] = {}

    # Setting values that make a run a diagnostic rather than the benchmark's protocol;
    # leaderboards name them in every row label (ALFWorld: {"action": "rank"}).
    diagnostics: ClassVar[dict[str, Any]] = {}

    # Checks for the settings above (harness.core.params), applied where a run is specified.
    param_checks: ClassVar[dict[str, Check]] = {}

    def __init__(self, params: dict[str, Any] | None = None):
        self.params = dict(params or {})

    @property
    def chance(self) -> float | None:
        """Success rate of guessing, where the benchmark has one (None: no meaningful chance)."""
        return None

    def chance_note(self) -> str:
        return ""

    def sender_task(self, sample: Sample) -> str:
        """What the sender plans for: the task, plus the facts this benchmark's settings give the
        sender alone (``data["sender_facts"]``, e.g. ALFWorld's ``sender_view=expert``). The
        receiver never reads them: only what the message carries."""
        facts = sample.data.get("sender_facts")
        return f"{sample.task}\n\n{facts}" if facts else sample.task

    def sender_tasks(self, samples: list[Sample]) -> list[tuple[str, str]]:
        """(id, what the sender plans for) of each sample: what a collection takes."""
        return [(s.id, self.sender_task(s)) for s in samples]

    def data_files(self, split: str) -> list[Path]:
        """The files a split's samples (``train``: training conversations) are read from."""
        raise NotImplementedError

    def fingerprint(self, split: str, *, with_train: bool = False) -> str:
        """A content hash of the data a run on ``split`` reads (plus the training data)."""
        parts = [files_digest(tuple(self.data_files(split)))]
        if with_train:
            parts.append(files_digest(tuple(self.data_files("train"))))
        return hashlib.sha256("+".join(parts).encode()).hexdigest()[:16]

    def samples(self, split: str, limit: int | None = None) -> list[Sample]:
        raise NotImplementedError

    def train_samples(self, limit: int | None = None, detours: int = 0) -> list[Sample]:
        """Samples with a reference conversation in ``data['conversation']`` for receiver training.
        ``detours`` (``TrainConfig.detours``): rejected actions per conversation, each followed by
        the environment's answer and the expert's next action, for a benchmark whose expert plays
        an environment (ALFWorld); single-reply benchmarks have no turn to add them to."""
        raise NotImplementedError

    def single_reply_prompt(self, sample: Sample) -> str | None:
        """The prompt of an episode that is one reply to one prompt (MATH, probe), so that
        the runner may have an agent decode several episodes' replies in one batch
        (``prefetch``) before they are played; None for a multi-turn benchmark."""
        return None

    def play(self, sample: Sample, agent: Agent, message: Message) -> Record:
        raise NotImplementedError

    @property
    def plays_together(self) -> bool:
        """Whether ``play_together`` may play several multi-turn episodes in lockstep."""
        return False

    def play_together(self, samples: list[Sample], agents: list[Agent], messages: list[Message],
                      respond_together) -> Iterator[tuple[int, Record]]:
        """Play ``samples`` at once, one agent each, every turn's replies coming from one
        ``respond_together(agents, observations)`` call; yield (index, record) as each ends."""
        raise NotImplementedError


def files_digest(paths: tuple[Path, ...]) -> str:
    """sha256 over the files' names (relative to their common folder) and contents."""
    root = Path(os.path.commonpath([Path(p).parent for p in paths])) if paths else Path()
    h = hashlib.sha256()
    for path in paths:
        path = Path(path)
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(_file_digest(path, *_stat(path)).encode())
    return h.hexdigest()


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


@cache
def _file_digest(path: Path, size: int, mtime_ns: int) -> str:
    """Content hash, cached per process for a file of this size and modification time."""
    return hashlib.sha256(path.read_bytes()).hexdigest()
