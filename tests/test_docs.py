"""The documentation: the mkdocs site builds with --strict, every page is in the nav and every
nav entry is a page, and the README stays short, with no measured table in it (those live in
docs/performance.md, each with its date, commit, machine and command)."""

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 200
# A Markdown table row holding a measurement: a number with a unit of percent or (milli)seconds.
MEASURED_ROW = re.compile(r"\d\s*(%|m?s\b)")


def _needs_mkdocs() -> None:
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (it comes with the `dev` extra: pip install -e '.[dev]')")


def _build(root: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=root, capture_output=True, text=True, timeout=300)


def nav_pages(nav) -> list[str]:
    """Every page file an mkdocs nav names, however deeply nested (links to URLs left out)."""
    if isinstance(nav, str):
        return [] if "://" in nav else [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    return []


def nav_problems(config: dict, docs: Path) -> list[str]:
    """Nav entries without a page, and pages without a nav entry."""
    named = nav_pages(config.get("nav") or [])
    pages = sorted(p.relative_to(docs).as_posix() for p in docs.rglob("*.md"))
    return ([f"in the nav, not in {docs.name}/: {p}" for p in named if not (docs / p).is_file()]
            + [f"in {docs.name}/, not in the nav: {p}" for p in pages if p not in named])


def measured_rows(text: str) -> list[str]:
    """Lines of Markdown tables that carry a number with a % or s unit."""
    return [line for line in text.splitlines() if line.lstrip().startswith("|") and MEASURED_ROW.search(line)]


def _config() -> dict:
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())


def test_the_site_builds_strict(tmp_path):
    _needs_mkdocs()
    done = _build(ROOT, tmp_path / "site")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site" / "index.html").is_file()


def test_a_broken_link_fails_the_strict_build(tmp_path):
    """The build above can fail: a link to a page that does not exist stops it."""
    _needs_mkdocs()
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    with (tmp_path / "docs" / "index.md").open("a") as f:
        f.write("\n[gone](no-such-page.md)\n")
    done = _build(tmp_path, tmp_path / "site")
    assert done.returncode != 0 and "no-such-page.md" in done.stderr, done.stderr


def test_the_readme_is_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"


def test_every_nav_entry_is_a_page_and_every_page_is_in_the_nav():
    config = _config()
    assert config.get("docs_dir", "docs") == "docs"
    assert nav_pages(config.get("nav") or []), "mkdocs.yml has no nav"
    assert nav_problems(config, ROOT / "docs") == []


def test_nav_problems_finds_a_missing_page_and_a_stray_one(tmp_path):
    (tmp_path / "index.md").write_text("# home\n")
    (tmp_path / "stray.md").write_text("# stray\n")
    config = {"nav": [{"Home": "index.md"}, {"Part": [{"Gone": "gone.md"}, {"Site": "https://example.org"}]}]}
    assert nav_problems(config, tmp_path) == [f"in the nav, not in {tmp_path.name}/: gone.md",
                                              f"in {tmp_path.name}/, not in the nav: stray.md"]


def test_the_readme_holds_no_measured_table():
    rows = measured_rows((ROOT / "README.md").read_text())
    assert rows == [], "measured tables belong in docs/performance.md:\n" + "\n".join(rows)


@pytest.mark.parametrize("line, measured", [
    ("| latent | 99.6% | [97.8, 99.9] | 25% |", True),
    ("| no_comm | seen (30) | 364 s |", True),
    ("  | naive, batch 1 | 1469.7 ms |", True),
    ("| MATH, 32 problems | 52.8 s, 150 tokens/s |", True),
    ("| `run` | trains receivers and evaluates methods |", False),
    ("| math | `math500` (default), `test` | 10 problems |", False),
    ("The latent receiver scored 99.6% on the probe.", False),
])
def test_measured_rows_tells_a_measured_row_from_others(line, measured):
    assert bool(measured_rows(line)) is measured
