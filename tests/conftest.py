"""Test settings: data from ../shared/data (unless the caller set the variables)."""

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
os.environ.setdefault("MATH_DATA", str(SHARED / "math"))
os.environ.setdefault("ALFWORLD_DATA", str(SHARED / "alfworld"))


@pytest.fixture
def results_env(tmp_path, monkeypatch):
    """Private results and artifact folders (the converted model stays shared); returns the db path."""
    from interlat_bench.harness.core.settings import models_dir

    monkeypatch.setenv("INTERLAT_MODELS", str(models_dir()))
    monkeypatch.setenv("INTERLAT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("INTERLAT_RESULTS", str(tmp_path / "results"))
    return tmp_path / "results" / "interlat.duckdb"
