"""Where results go by default: never among the package's source files."""

from __future__ import annotations

import pytest

from interlat_bench.harness.core.errors import UserError
from interlat_bench.harness.core.settings import RESULTS_ENV, default_db, package_folders, results_dir

REPO_ROOT = package_folders()[0].parent


def test_package_folders_cover_every_package():
    names = {p.name for p in package_folders()}
    assert {"harness", "methods", "benchmarks", "collectors", "trainers", "results"} <= names


@pytest.mark.parametrize("cwd", [".", "results", "harness", "methods/../trainers"])
def test_default_results_never_inside_a_package(cwd, monkeypatch):
    monkeypatch.delenv(RESULTS_ENV, raising=False)
    monkeypatch.chdir(REPO_ROOT / cwd)
    try:
        db = default_db().resolve()
    except UserError as e:  # refusing is fine; writing among the sources is not
        assert "package folder" in str(e)
        return
    for folder in package_folders():
        assert not db.is_relative_to(folder), (db, folder)


def test_default_from_the_repository_root(monkeypatch):
    monkeypatch.delenv(RESULTS_ENV, raising=False)
    monkeypatch.chdir(REPO_ROOT)
    assert results_dir().resolve() == REPO_ROOT / "interlat-results"


def test_env_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv(RESULTS_ENV, str(tmp_path / "r"))
    assert default_db() == tmp_path / "r" / "interlat.duckdb"
