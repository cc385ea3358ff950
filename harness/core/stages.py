"""The stages of a run cell, each as the spec it is built from (HELM's ``RunSpec`` parts).

A method declares them (``methods.base.Method.stages``) when the grid is expanded; the
runner (``harness.runner``) builds every stage from its spec, in one order:

    training plans  -> receiver training -> student training -> evaluation messages -> play

(evaluation messages: a plan collection, K latent steps, or a training-free family's sender pass)

Specs are plain frozen data (no torch), so a grid is resolved before any model loads. Cache
keys (collections, checkpoints, students) come from these specs; run keys from the RunSpec's
own fields, which these are derived from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from interlat_bench.harness.core.conversation import Layout
from interlat_bench.harness.core.message import MessageKind


@dataclass(frozen=True)
class PlanCollection:
    """The sender writes a plan per task, and its last-layer states are kept (collectors)."""

    sender_model: str
    dtype: str
    prompt_template: str   # the benchmark's planner prompt, with {task}
    greedy: bool
    temperature: float
    top_p: float
    top_k: int
    max_new_tokens: int
    seed: int
    keep_rows: int | None = None  # compressed front end: the first K rows only


@dataclass(frozen=True)
class StudentTraining:
    """compressed_k: a student of the sender learns to speak in K latent steps against the
    frozen receiver (SPEC section 5), on the receiver's training tasks and plans."""

    k: int
    epochs: float
    lr: float
    head_lr: float


@dataclass(frozen=True)
class LatentSteps:
    """The sender speaks in K latent steps: with its initial head, or as the trained ``student``."""

    sender_model: str
    k: int
    student: StudentTraining | None = None


@dataclass(frozen=True)
class SenderPass:
    """A training-free family's sender (LatentMAS, KVComm, CIPHER, activation communication):
    each task's planner prompt read in one pass of ``family``'s own (``collectors.<family>``),
    with ``settings``; nothing is trained or cached. ``calibration``: how many training samples
    the settings are first fitted on (``Method.calibrated``: KVComm's ``top:f`` layers); 0, none."""

    family: str
    sender_model: str
    dtype: str
    prompt_template: str
    settings: tuple[tuple[str, Any], ...]
    calibration: int = 0


@dataclass(frozen=True)
class ReceiverTraining:
    """The receiver fine-tuned with ``kind`` in its slot (or as its own tokens: ``layout``) on
    the benchmark's training conversations, with the sender's ``plans`` for them."""

    receiver_model: str
    kind: MessageKind
    layout: Layout
    settings: tuple[tuple[str, Any], ...]  # trainers.receiver.TrainConfig, as the run key holds it
    dtype: str
    plan_prompt: str
    sender_model: str | None       # whose tokens latent rows stand for (the adapter's warm-up)
    plans: PlanCollection | None   # None: trained with an empty slot or no plan

    def config(self) -> dict[str, Any]:
        return dict(self.settings)


@dataclass(frozen=True)
class Stages:
    """Every stage a run cell builds; None where the method has no such stage."""

    receiver_training: ReceiverTraining | None = None
    messages: PlanCollection | LatentSteps | SenderPass | None = None  # what the sender sends at evaluation

    def describe(self) -> dict[str, Any]:
        return asdict(self)
