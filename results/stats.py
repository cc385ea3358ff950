"""Paired significance tests between two configurations on the episodes they share.

Two configurations are paired on (column, sample_id, seed): the same game, problem or probe
question, played with the same seed. Success is binary, so the exact McNemar test (a two-sided
binomial test on the discordant pairs) applies; steps and scores get the Wilcoxon signed-rank
test. The p-values of one table are Holm-corrected together (family-wise error 5%).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05


@dataclass(frozen=True)
class Paired:
    """One comparison: ``n`` shared episodes, mean(row) - mean(baseline), the raw p-value and
    the test that gave it. ``only_row`` / ``only_baseline``: discordant pairs (McNemar)."""

    n: int
    delta: float
    p: float
    test: str
    only_row: int | None = None
    only_baseline: int | None = None


def mcnemar_exact(row: np.ndarray, baseline: np.ndarray) -> Paired:
    """Exact McNemar test on paired binary outcomes (1 = success)."""
    from statsmodels.stats.contingency_tables import mcnemar

    row, baseline = np.asarray(row, dtype=bool), np.asarray(baseline, dtype=bool)
    both, only_row = int(np.sum(row & baseline)), int(np.sum(row & ~baseline))
    only_base, neither = int(np.sum(~row & baseline)), int(np.sum(~row & ~baseline))
    p = 1.0 if only_row + only_base == 0 else float(
        mcnemar([[both, only_row], [only_base, neither]], exact=True).pvalue)
    delta = (only_row - only_base) / len(row) if len(row) else math.nan
    return Paired(len(row), delta, min(p, 1.0), "exact McNemar", only_row, only_base)


def wilcoxon_paired(row: np.ndarray, baseline: np.ndarray) -> Paired:
    """Wilcoxon signed-rank test on paired values (zero differences dropped, as Wilcoxon's)."""
    from scipy.stats import wilcoxon

    row, baseline = np.asarray(row, dtype=float), np.asarray(baseline, dtype=float)
    diff = row - baseline
    p = 1.0 if not np.any(diff) else float(wilcoxon(row, baseline, zero_method="wilcox").pvalue)
    return Paired(len(row), float(np.mean(diff)) if len(diff) else math.nan, p, "Wilcoxon signed-rank")


def paired_test(row: np.ndarray, baseline: np.ndarray, binary: bool) -> Paired:
    return mcnemar_exact(row, baseline) if binary else wilcoxon_paired(row, baseline)


def holm(p_values: list[float]) -> list[float]:
    """Holm-adjusted p-values (step-down, family-wise); empty in, empty out."""
    if not p_values:
        return []
    from statsmodels.stats.multitest import multipletests

    return [float(p) for p in multipletests(p_values, alpha=ALPHA, method="holm")[1]]
