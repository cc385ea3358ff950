"""The strategy interface every communication method implements.

A method says what its receiver is trained with and what is sent at evaluation; the
runner does the rest (samples, resume, records). Register a subclass with
``@register_method`` (or the ``interlat_bench.methods`` entry-point group).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # torch stays out of `--help`
    import torch

    from interlat_bench.benchmarks.base import Agent, Sample
    from interlat_bench.harness.context import RunContext

MESSAGE_KINDS = ("none", "text", "latent")


@dataclass(frozen=True)
class Message:
    """What the sender passes on: nothing, plan text, or a latent matrix (rows x hidden)."""

    kind: str = "none"
    text: str | None = None
    token_ids: tuple[int, ...] | None = None
    latents: torch.Tensor | None = field(default=None, compare=False)
    sender_ms: float = 0.0

    def __post_init__(self):
        if self.kind not in MESSAGE_KINDS:
            raise ValueError(f"message kind must be one of {MESSAGE_KINDS}, got {self.kind!r}")

    @property
    def rows(self) -> int:
        if self.kind == "latent" and self.latents is not None:
            return int(self.latents.shape[0])
        return len(self.token_ids or ())

    @property
    def nbytes(self) -> int:
        if self.kind == "latent" and self.latents is not None:
            return self.latents.numel() * self.latents.element_size()
        return len((self.text or "").encode())

    def with_latents(self, latents: torch.Tensor) -> Message:
        return replace(self, latents=latents)

    def stats(self) -> dict[str, Any]:
        dim = int(self.latents.shape[1]) if self.kind == "latent" and self.latents is not None else 0
        return {"message_kind": self.kind, "message_rows": self.rows, "message_dim": dim,
                "message_bytes": self.nbytes}


NO_MESSAGE = Message()


class Method:
    name: ClassVar[str]
    description: ClassVar[str] = ""
    # What fills the receiver's slot during training ("-" for an untrained receiver).
    trained_with: ClassVar[str] = "-"
    needs_sender: ClassVar[bool] = False
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

    def __init__(self, params: dict[str, Any] | None = None):
        self.params = {**self.defaults, **(params or {})}

    def key_params(self) -> dict[str, Any]:
        """Parameters that change outcomes; they enter the run key."""
        return dict(self.params)

    def prepare(self, ctx: RunContext, samples: list[Sample]) -> None:
        """Collect messages / train receivers (cached) before the samples are played."""

    def agent(self, ctx: RunContext) -> Agent:
        raise NotImplementedError

    def message(self, ctx: RunContext, sample: Sample) -> Message:
        return NO_MESSAGE

    def transform(self, message: Message, rng: torch.Generator) -> Message:
        """Evaluation-time change of the message (perturbation, truncation); identity by default."""
        return message
