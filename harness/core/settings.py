"""Where things live: data, caches and the results database.

Every location comes from a flag or an environment variable, never from a hard-coded path,
so CI can point at ``../shared/data`` and users at their own downloads.
"""

from __future__ import annotations

import os
from pathlib import Path

from interlat_bench.harness.core.errors import UserError

CACHE_ENV = "INTERLAT_CACHE"
RESULTS_ENV = "INTERLAT_RESULTS"
MODELS_ENV = "INTERLAT_MODELS"


def process_rank() -> int:
    """This process's rank in a torchrun job (0 when not launched by torchrun): the first one
    writes shared files and speaks for all."""
    return int(os.environ.get("RANK", "0"))


def cache_dir() -> Path:
    """Root of content-addressed artifacts (converted models, messages, checkpoints)."""
    root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "interlat-bench"
    )
    return Path(root)


def models_dir() -> Path:
    """Converted models; separate from other artifacts so a test can isolate those alone."""
    return Path(os.environ.get(MODELS_ENV) or cache_dir() / "models")


DEFAULT_RESULTS = "interlat-results"


PACKAGES = ("harness", "methods", "benchmarks", "collectors", "trainers", "results")


def package_folders() -> list[Path]:
    """Where the interlat_bench packages' source lives (found without importing them)."""
    import importlib.util

    out = []
    for name in PACKAGES:
        spec = importlib.util.find_spec(f"interlat_bench.{name}")
        out += [Path(p).resolve() for p in (spec.submodule_search_locations or [])] if spec else []
    return out


def results_dir() -> Path:
    """$INTERLAT_RESULTS, else ./interlat-results: results never land among source files."""
    if os.environ.get(RESULTS_ENV):
        path = Path(os.environ[RESULTS_ENV])
        if path.exists() and not path.is_dir():
            raise UserError(f"{RESULTS_ENV}={path}: a file stands where the results folder should be")
        return path
    path = Path(DEFAULT_RESULTS).resolve()
    inside = next((p for p in package_folders() if path.is_relative_to(p)), None)
    if inside is not None:
        raise UserError(f"./{DEFAULT_RESULTS} would land inside the package folder {inside}: "
                        f"run from elsewhere or set {RESULTS_ENV} (or --db)")
    return Path(DEFAULT_RESULTS)


def default_db() -> Path:
    return results_dir() / "interlat.duckdb"


def data_dir(env: str, explicit: str | os.PathLike | None, *, missing: str, wrong: str,
             inside: str | None = None) -> Path:
    """A benchmark's data folder: ``explicit``, else ``$env``; ``missing`` is said when neither is
    set, ``wrong`` when the path is not a folder (or lacks the sub-folder ``inside``)."""
    path = explicit or os.environ.get(env)
    if not path:
        raise UserError(missing)
    path = Path(path)
    if not (path / (inside or ".")).is_dir():
        raise UserError(f"{env}={path}: {wrong}")
    return path
