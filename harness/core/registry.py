"""Name -> class registries for methods and benchmarks.

Built-ins register themselves with a decorator when their module is imported;
third-party packages add classes through the entry-point groups
``interlat_bench.methods`` and ``interlat_bench.benchmarks``.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from interlat_bench.harness.core.errors import UnknownName

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, group: str, builtin_modules: tuple[str, ...]):
        self.kind = kind
        self.group = group
        self._builtin_modules = builtin_modules
        self._classes: dict[str, type[T]] = {}
        self._loaded = False

    def register(self, cls: type[T]) -> type[T]:
        name = getattr(cls, "name", None)
        if not name or not isinstance(name, str):
            raise TypeError(f"{cls.__qualname__} needs a class attribute `name` to be registered")
        other = self._classes.get(name)
        if other is not None and other is not cls:
            raise ValueError(f"{self.kind} name {name!r} is taken by {other.__module__}.{other.__qualname__}")
        self._classes[name] = cls
        return cls

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in self._builtin_modules:
            mod = importlib.import_module(module)
            # A package of built-ins (methods.perturbations): every module in it registers.
            for info in pkgutil.iter_modules(getattr(mod, "__path__", [])):
                importlib.import_module(f"{module}.{info.name}")
        for ep in entry_points(group=self.group):
            cls = ep.load()
            if cls.name not in self._classes:
                self.register(cls)

    def names(self) -> list[str]:
        self._load()
        return sorted(self._classes)

    def get(self, name: str) -> type[T]:
        self._load()
        try:
            return self._classes[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._classes, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UnknownName(
                f"unknown {self.kind} {name!r}{hint} (known: {', '.join(self.names())})"
            ) from None

    def items(self) -> list[tuple[str, type[T]]]:
        self._load()
        return sorted(self._classes.items())


methods: Registry = Registry(
    "method",
    "interlat_bench.methods",
    (
        "interlat_bench.methods.zeroshot",
        "interlat_bench.methods.interlat",
        "interlat_bench.methods.reference",
        "interlat_bench.methods.single_agent",
        "interlat_bench.methods.untrained_k",
        "interlat_bench.methods.compressed_k",
        "interlat_bench.methods.perturbations",
    ),
)
benchmarks: Registry = Registry(
    "benchmark",
    "interlat_bench.benchmarks",
    ("interlat_bench.benchmarks.math", "interlat_bench.benchmarks.alfworld", "interlat_bench.benchmarks.probe"),
)

register_method = methods.register
register_benchmark = benchmarks.register
