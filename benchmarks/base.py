"""What every benchmark provides: samples of a split, and how to play one sample."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol


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


class Agent(Protocol):
    """The acting side of an episode, produced by a method.

    ``begin`` opens an episode with the first user turn (instruction + task) and the
    message for the slot; ``respond`` feeds the next observation (None on the first call)
    and returns the agent's reply text. ``info`` carries benchmark facts a reference policy
    may use (admissible commands, the expert's action); LLM agents ignore it.
    """

    def begin(self, prompt: str, message: Any, sample: Sample) -> None: ...

    def respond(self, observation: str | None = None, info: dict | None = None) -> str: ...

    def timings_ms(self) -> dict[str, float]: ...


class Benchmark:
    name: ClassVar[str]
    splits: ClassVar[tuple[str, ...]]
    default_splits: ClassVar[tuple[str, ...]]  # evaluated when --splits is not given
    # The prompt the sender plans from, given the sample's task text.
    planner_prompt: ClassVar[str] = "Please provide a general plan to solve this task.\n\nThe task is: {task}"
    reply_tokens: ClassVar[int] = 256  # receiver tokens per reply unless --max-new-tokens
    cpu_limit: ClassVar[int | None] = None  # samples per split on a CPU unless --limit
    # Settings that change outcomes, with their defaults (they enter the run key).
    defaults: ClassVar[dict[str, Any]] = {}
    # Changes to the receiver-training preset this benchmark needs (e.g. longer sequences).
    train_overrides: ClassVar[dict[str, Any]] = {}

    def __init__(self, params: dict[str, Any] | None = None):
        self.params = dict(params or {})

    def samples(self, split: str, limit: int | None = None) -> list[Sample]:
        raise NotImplementedError

    def train_samples(self, limit: int | None = None) -> list[Sample]:
        """Samples with a reference conversation in ``data['conversation']`` for receiver training."""
        raise NotImplementedError

    def play(self, sample: Sample, agent: Agent, message: Any) -> Record:
        raise NotImplementedError
