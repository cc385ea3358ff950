"""What a method sees while a run cell executes: the spec, the benchmark, loaded models."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from interlat_bench.benchmarks.base import Benchmark
from interlat_bench.harness.runspec import RunSpec

# Models are shared by all cells of a grid in one process (loading costs seconds).
_MODELS: dict[tuple[str, str], Any] = {}


@dataclass
class RunContext:
    spec: RunSpec
    benchmark: Benchmark
    log: Callable[[str], None] = print

    def model(self, ref: str, *, fresh: bool = False):
        """A loaded model; ``fresh`` gives a private copy a method may modify (add tokens, train)."""
        from interlat_bench.harness import models

        if fresh:
            return models.load(ref, dtype=self.spec.dtype)
        key = (ref, self.spec.dtype)
        if key not in _MODELS:
            _MODELS[key] = models.load(ref, dtype=self.spec.dtype)
        return _MODELS[key]

    def decoding(self):
        return self.spec.decoding
