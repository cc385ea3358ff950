"""The import contract covers every module: a module left out of every layer could import
anything (as `harness/lm_eval_model.py` once could)."""

from __future__ import annotations

import pkgutil
from pathlib import Path

import tomllib

import interlat_bench.harness as harness_pkg

ROOT = Path(harness_pkg.__file__).resolve().parents[1]
PACKAGES = ("harness", "methods", "benchmarks", "collectors", "trainers", "results")


def _modules() -> list[str]:
    out = []
    for folder in PACKAGES:
        for info in pkgutil.walk_packages([str(ROOT / folder)], prefix=f"interlat_bench.{folder}."):
            out.append(info.name)
    return out


def test_every_module_sits_in_a_layer():
    contract = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    layers = [name.strip() for layer in contract["layers"] for name in layer.split("|")]
    full = [name if name.startswith("interlat_bench.") else f"interlat_bench.harness.{name}" for name in layers]
    modules = _modules()
    assert "interlat_bench.harness.lm_eval_model" in modules and len(modules) > 60
    outside = [m for m in modules if not any(m == layer or m.startswith(layer + ".") for layer in full)]
    assert not outside, f"modules in no layer of the import contract: {outside}"
