"""RunSpec: one cell of a grid, frozen, with a stable key over what changes outputs."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from interlat_bench.harness.core.stages import Stages

# Bump when the meaning of a key's fields changes (old results then no longer match).
# 2: the key carries `data`, a fingerprint of the benchmark data the run reads.
# 3: per-sample random streams come from harness.core.seeds.item_seed (sampled replies differ).
# 4: the key carries `training`, the receiver's resolved training settings (what a preset
#    holds, not its name), and ALFWorld's first N games take its task types in turn.
KEY_VERSION = 4


def _frozen(params: dict[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((params or {}).items()))


@dataclass(frozen=True)
class DecodingSpec:
    """Receiver decoding; mirrors harness.core.generation.Decoding without importing torch."""

    greedy: bool = True
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 50
    max_new_tokens: int = 256
    # Prompt lookup draft length (greedy, one row; 0 = off). A speed knob: the tokens are
    # those of plain greedy decoding, so it is not part of the key.
    lookup_tokens: int = 8

    def key(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("lookup_tokens")
        if self.greedy:  # sampling knobs do not change greedy outputs
            for k in ("temperature", "top_p", "top_k"):
                d.pop(k)
        return d


@dataclass(frozen=True)
class RunSpec:
    method: str
    benchmark: str
    split: str
    receiver_model: str | None  # None: the method runs no model (reference policies)
    sender_model: str | None = None
    seed: int = 0
    dtype: str | None = "float32"
    method_params: tuple[tuple[str, Any], ...] = ()
    benchmark_params: tuple[tuple[str, Any], ...] = ()
    decoding: DecodingSpec = field(default_factory=DecodingSpec)
    # Content fingerprint of the data the run reads (its split, and training data for trained
    # receivers): changed data is a new run, never a resumed one.
    data: str | None = None
    # The receiver's training settings (trainers.receiver.TrainConfig, resolved from the preset
    # and the benchmark's sizing); empty for a method that trains no receiver.
    training: tuple[tuple[str, Any], ...] = ()
    # Not in the key: how many samples to play (raising it extends the same run).
    limit: int | None = None
    # Not in the key either: the stages the cell builds (harness.core.stages), which the
    # method resolves from the fields above when the grid is expanded (grid.expand).
    stages: Stages | None = field(default=None, compare=False, repr=False)

    @classmethod
    def make(cls, *, method_params=None, benchmark_params=None, training=None, **kw) -> RunSpec:
        return cls(method_params=_frozen(method_params), benchmark_params=_frozen(benchmark_params),
                   training=_frozen(training), **kw)

    def key_fields(self) -> dict[str, Any]:
        # The key's field names are frozen: "receiver" and "sender" hold the model references
        # (receiver_model, sender_model), as they did before those fields were renamed.
        return {
            "key_version": KEY_VERSION,
            "method": self.method,
            "benchmark": self.benchmark,
            "split": self.split,
            "receiver": self.receiver_model,
            "sender": self.sender_model,
            "seed": self.seed,
            "dtype": self.dtype,
            "method_params": dict(self.method_params),
            "benchmark_params": dict(self.benchmark_params),
            "decoding": self.decoding.key(),
            "data": self.data,
            "training": dict(self.training),
        }

    @property
    def run_key(self) -> str:
        blob = json.dumps(self.key_fields(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        d = self.key_fields()
        d["limit"] = self.limit
        return d

    def label(self) -> str:
        who = f"{self.sender_model}->{self.receiver_model}" if self.sender_model else (self.receiver_model or "no model")
        return f"{self.method} | {self.benchmark}/{self.split} | {who} | seed {self.seed}"
