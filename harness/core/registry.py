"""Name -> class registries for methods and benchmarks.

Built-ins register themselves with a decorator when their module is imported;
third-party packages add classes through the entry-point groups
``interlat_bench.methods`` and ``interlat_bench.benchmarks``; a class not packaged yet is
named by a path, ``package.module:Class`` or ``path/to/file.py:Class``, in the environment
variable ``INTERLAT_METHODS`` / ``INTERLAT_BENCHMARKS`` (comma-separated; what
``run --method-path`` sets, so worker processes find it too).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import pkgutil
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Generic, TypeVar

from interlat_bench.harness.core.errors import UnknownName, UserError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, group: str, builtin_modules: tuple[str, ...], env: str = ""):
        self.kind = kind
        self.group = group
        self.env = env
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
        for ref in filter(None, os.environ.get(self.env, "").split(",") if self.env else []):
            self.register(load_class(ref, f"{self.env}={ref}"))

    def add_path(self, ref: str, flag: str) -> str:
        """Register the class at ``ref`` (``module:Class`` or ``file.py:Class``) now and for
        this process's workers; returns its name."""
        self._load()
        cls = load_class(ref, f"{flag} {ref}")
        module_ref, _, name = ref.rpartition(":")
        if module_ref.endswith(".py"):  # workers may start elsewhere
            ref = f"{Path(module_ref).resolve()}:{name}"
            _LOADED[ref] = cls
        try:
            self.register(cls)
        except (TypeError, ValueError) as exc:
            raise UserError(f"{flag} {ref}: {exc}") from None
        known = os.environ.get(self.env, "").split(",")
        if ref not in known:
            os.environ[self.env] = ",".join(filter(None, [*known, ref]))
        return cls.name

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


_LOADED: dict[str, type] = {}  # ref -> class: a file is executed once per process


def load_class(ref: str, where: str) -> type:
    """The class at ``package.module:Class`` (importable, or from the working directory) or
    ``path/to/file.py:Class``; a UserError naming ``where`` when it is not there."""
    if ref in _LOADED:
        return _LOADED[ref]
    module_ref, sep, name = ref.rpartition(":")
    if not sep or not module_ref or not name.isidentifier():
        raise UserError(f"{where}: expected package.module:Class or path/to/file.py:Class")
    try:
        if module_ref.endswith(".py"):
            path = Path(module_ref)
            if not path.is_file():
                raise UserError(f"{where}: no such file {path}")
            spec = importlib.util.spec_from_file_location(f"interlat_plugin_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module  # dataclasses and pickling look modules up by name
            spec.loader.exec_module(module)
        else:
            if "" not in sys.path and os.getcwd() not in sys.path:  # as `python -m` would find it
                sys.path.append(os.getcwd())
            module = importlib.import_module(module_ref)
    except UserError:
        raise
    except Exception as exc:  # an import error, or the module's own failure while it loads
        raise UserError(f"{where}: cannot import {module_ref} ({type(exc).__name__}: {exc})") from None
    cls = getattr(module, name, None)
    if not isinstance(cls, type):
        raise UserError(f"{where}: {module_ref} has no class {name}")
    if not isinstance(getattr(cls, "name", None), str):
        raise UserError(f"{where}: {name} needs a class attribute `name` (the name it runs under)")
    _LOADED[ref] = cls
    return cls


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
        "interlat_bench.methods.latentmas",
        "interlat_bench.methods.kv_share",
        "interlat_bench.methods.cipher",
        "interlat_bench.methods.activation",
    ),
    "INTERLAT_METHODS",
)
benchmarks: Registry = Registry(
    "benchmark",
    "interlat_bench.benchmarks",
    ("interlat_bench.benchmarks.math", "interlat_bench.benchmarks.alfworld", "interlat_bench.benchmarks.probe"),
    "INTERLAT_BENCHMARKS",
)

register_method = methods.register
register_benchmark = benchmarks.register
