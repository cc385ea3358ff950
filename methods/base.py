"""The declaration every communication method makes, and what it sees while a cell runs.

A method declares; the runner (``harness.runner``) builds each stage from its spec
(``harness.core.stages``), in one direction: samples -> receiver training -> sender
messages -> evaluation -> records.
A method says
- what its receiver is trained with (``trained_with``: a ``MessageKind``, or None for a
  receiver used as it is) and with which settings (``train_config``);
- what the sender passes on at evaluation (``sends``) and, where it is not the collected
  plan, how (``stages``: e.g. K latent steps of a trained student);
- which message a sample receives (``message_for``) and how it changes on the way
  (``transform``: perturbations, truncation), drawing from a per-sample seeded generator;
- which agent acts (``agent``), given the trained receiver.
Register a subclass with ``@register_method`` (or the ``interlat_bench.methods``
entry-point group).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from interlat_bench.harness.core.conversation import Layout
from interlat_bench.harness.core.message import NO_MESSAGE, Message, MessageKind
from interlat_bench.harness.core.params import Check
from interlat_bench.harness.core.runspec import RunSpec
from interlat_bench.harness.core.stages import ReceiverTraining, Stages

if TYPE_CHECKING:  # torch stays out of `--help`
    import torch

    from interlat_bench.benchmarks.base import Agent, Benchmark, Sample
    from interlat_bench.trainers.checkpoint import Receiver
    from interlat_bench.trainers.config import TrainConfig

__all__ = ["NO_MESSAGE", "Message", "MessageKind", "Method", "RunContext"]


@dataclass
class RunContext:
    """What a method sees while a run cell executes: the spec, the benchmark, a log."""

    spec: RunSpec
    benchmark: Benchmark
    log: Callable[[str], None] = print

    def model(self, ref: str):
        """A loaded model shared by every cell of the process (loading costs seconds)."""
        from interlat_bench.harness.core.models import shared

        return shared(ref, self.spec.dtype)

    def decoding(self):
        return self.spec.decoding


class Method:
    name: ClassVar[str]
    description: ClassVar[str] = ""
    # What fills the receiver's slot in training; None: the receiver is used as it is.
    trained_with: ClassVar[MessageKind | None] = None
    # What the sender passes on at evaluation (NONE: the sender does not run).
    sends: ClassVar[MessageKind] = MessageKind.NONE
    # Where the trained receiver reads it: in the slot (two agents), or as a single agent's
    # own tokens (harness.core.conversation.Layout), in training and evaluation alike.
    layout: ClassVar[Layout] = Layout.SLOT
    # A single agent writes its own plan: the plan's author is the receiver model.
    plans_with_receiver: ClassVar[bool] = False
    # Benchmarks this method can run on; None means all.
    benchmarks: ClassVar[tuple[str, ...] | None] = None
    # Whether an LLM acts (reference policies don't; they are cheap enough to play everything).
    uses_model: ClassVar[bool] = True
    # Episodes may be played in parallel worker processes (no model state to share).
    parallel_episodes: ClassVar[bool] = False
    # Benchmark settings this method plays with unless the user sets them (task -> params).
    benchmark_defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    # Settable parameters and their defaults (`--param key=value`); all enter the run key.
    defaults: ClassVar[dict[str, Any]] = {}
    # What each parameter accepts (harness.core.params); checked before a run is specified.
    param_checks: ClassVar[dict[str, Check]] = {}
    # Values a grid runs for a parameter the user left unset, one configuration each
    # (truncate: rho = 0.9, 0.5, 0). `--param rho=0.5` runs one; `--param 'rho=[0.9,0.1]'` those.
    sweep: ClassVar[dict[str, tuple[Any, ...]]] = {}

    def __init__(self, params: dict[str, Any] | None = None):
        self.params = {**self.defaults, **(params or {})}

    @classmethod
    def needs_sender(cls) -> bool:
        """Whether the sender model runs (and so belongs in the run key)."""
        return cls.sends is not MessageKind.NONE or cls.trained_with in (MessageKind.TEXT, MessageKind.LATENT)

    def train_config(self, benchmark: Benchmark, seed: int = 0) -> TrainConfig:
        """The training settings of a method with ``trained_with`` set, for the run's ``seed``."""
        raise NotImplementedError(f"method {self.name!r} trains no receiver")

    def stages(self, benchmark: Benchmark, spec: RunSpec) -> Stages:
        """The stages this method's cells build, resolved once when the grid is expanded. By
        default: a receiver trained with ``trained_with`` (on plans collected with this method's
        sender settings, where it reads plans), and at evaluation those plans sent as ``sends``
        says. A method that sends otherwise declares its own ``messages`` stage."""
        from interlat_bench.methods.sending import plan_collection

        def plans():
            return plan_collection(self.params, benchmark, sender_model=spec.sender_model, dtype=spec.dtype, seed=spec.seed)

        training = None
        if self.trained_with is not None:
            reads_plans = self.trained_with is not MessageKind.NONE
            # The run key's resolved settings where the grid made them (an lm-eval spec has none).
            training = ReceiverTraining(
                receiver_model=spec.receiver_model, kind=self.trained_with, layout=self.layout, dtype=spec.dtype,
                settings=spec.training or tuple(sorted(self.train_config(benchmark, spec.seed).key_dict().items())),
                plan_prompt=benchmark.planner_prompt, sender_model=spec.sender_model, plans=plans() if reads_plans else None)
        return Stages(receiver_training=training, messages=plans() if self.sends is not MessageKind.NONE else None)

    def shipped(self, message: Message) -> Message:
        """A collected plan as the sender passes it on: its text alone where ``sends`` is TEXT."""
        return message.as_text() if self.sends is MessageKind.TEXT else message

    def message_for(self, sample: Sample, messages: dict[str, Message], seed: int) -> Message:
        """The message ``sample``'s receiver gets; its own by default."""
        return messages.get(sample.id, NO_MESSAGE)

    def transform(self, message: Message, rng: torch.Generator) -> Message:
        """Evaluation-time change of the message (perturbation, truncation); identity by default."""
        return message

    def agent(self, ctx: RunContext, receiver: Receiver | None) -> Agent:
        """The acting side; ``receiver`` is the trained receiver (None when ``trained_with`` is)."""
        raise NotImplementedError
