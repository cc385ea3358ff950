"""What every benchmark provides: samples of a split, and how to play one sample."""

from __future__ import annotations

import hashlib
import os
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from interlat_bench.harness.core.message import Message
from interlat_bench.harness.core.params import Check
from interlat_bench.harness.core.prompts import DEFAULT_PLAN_PROMPT, FALLBACK_TEMPERATURE


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

    What an agent can do beyond this is declared by the protocols below and found once per
    run cell (``Capabilities.of``).
    """

    needs_expert: bool

    def begin(self, prompt: str, message: Message, sample: Sample) -> None: ...

    def respond(self, observation: str | None = None, info: dict | None = None) -> str: ...

    def choose(self, observation: str | None, options: list[str], info: dict | None = None) -> str:
        """Reply with one of ``options``, each a whole reply in the benchmark's format
        (``Benchmark.action_reply``; ALFWorld's ``action=rank``); an agent that already acts
        within them may just ``respond``."""
        ...

    def timings_ms(self) -> dict[str, float]: ...

    def episode_metrics(self) -> dict[str, Any]:
        """Facts about the episode's replies (e.g. how many the token cap cut); {} for none."""
        ...


@runtime_checkable
class Prefetching(Protocol):
    """Decodes the first replies of several single-reply episodes (prompt, message, sample)
    together, ahead of their ``begin``/``respond``."""

    def prefetch(self, episodes: list[tuple[str, Message, Sample]]) -> None: ...


@runtime_checkable
class Lockstep(Protocol):
    """Plays several multi-turn episodes at once, one ``sibling`` each, every turn's replies
    from one ``respond_together(agents, observations)`` call."""

    def sibling(self) -> Agent: ...

    def can_respond_together(self) -> bool: ...

    @staticmethod
    def respond_together(agents: Sequence[Agent], observations: Sequence[str | None]) -> list[str]: ...


@runtime_checkable
class Transcribing(Protocol):
    """Writes the episode's turns as it saw them (what `interlat-bench show` prints)."""

    def transcript(self, message: Message) -> list[dict[str, str]]: ...


@dataclass(frozen=True)
class Capabilities:
    """What the runner may ask of an agent beyond the ``Agent`` protocol, found once."""

    prefetch: bool = False
    lockstep: bool = False
    transcript: bool = False

    @classmethod
    def of(cls, agent: Agent | None) -> Capabilities:
        if agent is None:
            return cls()
        return cls(prefetch=isinstance(agent, Prefetching),
                   lockstep=isinstance(agent, Lockstep) and agent.can_respond_together(),
                   transcript=isinstance(agent, Transcribing))


class Benchmark:
    name: ClassVar[str]
    description: ClassVar[str] = ""  # `ls NAME` shows it (else the class docstring's first line)
    splits: ClassVar[tuple[str, ...]]
    default_splits: ClassVar[tuple[str, ...]]  # evaluated when --splits is not given
    # The prompt the sender plans from, given the sample's task text (see harness.core.prompts).
    planner_prompt: ClassVar[str] = DEFAULT_PLAN_PROMPT
    plan_temperature: ClassVar[float] = FALLBACK_TEMPERATURE  # the sender's, when it samples its plans
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

    # What a run prints after its success table: more leaderboards, by metric (ALFWorld's
    # steps, SPEC section 7), and per run the share of samples whose 0/1 metric is 1, with
    # its label (the probe's plans that state the answer).
    after_run_metrics: ClassVar[tuple[str, ...]] = ()
    after_run_rates: ClassVar[dict[str, str]] = {}
    # How ``play`` scores, when that changed after runs were recorded: it enters the run key
    # (through ``fingerprint``), so a results database never holds one metric read two ways
    # under one name. Plans and receivers are cached by other keys and are reused.
    scoring: ClassVar[str] = ""

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
        """A content hash of the data a run on ``split`` reads (plus the training data), and of
        ``scoring`` where set."""
        parts = [files_digest(tuple(self.data_files(split)))]
        if with_train:
            parts.append(files_digest(tuple(self.data_files("train"))))
        if self.scoring:
            parts.append(self.scoring)
        return hashlib.sha256("+".join(parts).encode()).hexdigest()[:16]

    def samples(self, split: str, limit: int | None = None) -> list[Sample]:
        raise NotImplementedError

    def train_samples(self, limit: int | None = None, detours: int = 0) -> list[Sample]:
        """Samples with a reference conversation in ``data['conversation']`` for receiver training.
        ``detours`` (``TrainConfig.detours``): rejected actions per conversation, each followed by
        the environment's answer and the expert's next action, for a benchmark whose expert plays
        an environment (ALFWorld); single-reply benchmarks have no turn to add them to."""
        raise NotImplementedError

    def warmup_samples(self, train: list[Sample], count: int | None) -> list[Sample]:
        """Training samples beyond ``train`` (the receiver's own conversations), up to ``count``
        in all: the adapter warm-up reads their sender plans (``TrainConfig.warmup_plans``), the
        receiver never trains on them."""
        if not count or count <= len(train):
            return []
        ids = {s.id for s in train}
        return [s for s in self.train_samples(limit=count) if s.id not in ids][: count - len(train)]

    @property
    def max_turns(self) -> int:
        """Replies a sample takes at most (what a time estimate counts): one, unless the
        benchmark plays turns."""
        return 1

    def single_reply_prompt(self, sample: Sample) -> str | None:
        """The prompt of an episode that is one reply to one prompt (MATH, probe), so that
        the runner may have an agent decode several episodes' replies in one batch
        (``prefetch``) before they are played; None for a multi-turn benchmark."""
        return None

    def play(self, sample: Sample, agent: Agent, message: Message) -> Record:
        raise NotImplementedError

    @classmethod
    def report_tables(cls, db, baseline: str, marks) -> list:
        """This benchmark's tables in `interlat-bench report` (``results.report`` builders); by
        default its success rate per method and split, with intervals and paired tests."""
        from interlat_bench.results import report

        return [report.success_table(db, cls.name, baseline, marks)]

    def action_reply(self, action: str) -> str:
        """An action as a reply in this benchmark's format: what an agent that chooses among
        actions (``Agent.choose``) scores and what a reference policy says."""
        return action

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
