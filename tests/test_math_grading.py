import json
import os
import threading
from pathlib import Path

import pytest

from interlat_bench.benchmarks.math import MathBenchmark
from interlat_bench.benchmarks.math_grading import is_equivalent, last_boxed


@pytest.mark.parametrize("text,expected", [
    ("so \\boxed{4}.", "4"),
    ("\\boxed{1} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxed{x^{2}+\\sqrt{3}}", "x^{2}+\\sqrt{3}"),
    ("the answer is $\\boxed 2$", "2"),
    ("\\fbox{7}", "7"),
    ("no box here", None),
    ("\\boxed{\\frac{1}{2}", None),  # cut off mid-answer
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize("gold,pred,verdict", [
    ("\\frac12", "0.5", True),
    ("\\frac{1}{2}", "\\dfrac{1}{2}", True),
    ("(3, \\frac{\\pi}{2})", "(3,\\frac{\\pi}{2})", True),
    ("10", "10.0", True),
    ("3", "4", False),
    ("\\frac{1}{2}", None, False),
    ("x+1", "1+x", True),
])
def test_equivalence(gold, pred, verdict):
    assert is_equivalent(gold, pred) is verdict


def test_grading_off_main_thread():
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("v", is_equivalent("\\frac12", "0.5")))
    t.start()
    t.join()
    assert out["v"] is True


def test_gold_math500_solutions_grade_equal_to_answers():
    with open(Path(os.environ["MATH_DATA"]) / "math500_test.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == 500
    wrong = [r["unique_id"] for r in rows if not is_equivalent(r["answer"], last_boxed(r["solution"]))]
    assert wrong == []


def test_math_splits_and_training_conversations():
    b = MathBenchmark()
    assert len(b.samples("math500")) == 500
    assert len(b.samples("test", limit=7)) == 7
    first = b.samples("math500", 1)[0]
    assert first.id == "test/precalculus/807.json" and first.data["level"] == 2
    conv = b.train_samples(limit=2)[0].data["conversation"]
    assert [m["role"] for m in conv] == ["user", "assistant"] and "\\boxed" in conv[1]["content"]
