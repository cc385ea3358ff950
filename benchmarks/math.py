"""MATH: competition problems answered in ``\\boxed{}``, graded by equivalence.

Splits: ``math500`` (the PRM800K 500-problem subset, default) and ``test`` (all 5,000);
``train`` (7,500) supplies receiver training conversations.
"""

from __future__ import annotations

import json
import os
import time
from functools import cache
from pathlib import Path

from interlat_bench.benchmarks.base import Agent, Benchmark, Record, Sample
from interlat_bench.benchmarks.math_grading import is_equivalent, last_boxed
from interlat_bench.harness.core.errors import UserError
from interlat_bench.harness.core.prompts import MATH_PLAN_PROMPT
from interlat_bench.harness.core.registry import register_benchmark
from interlat_bench.harness.core.settings import data_dir

FILES = {"math500": "math500_test.jsonl", "test": "math_test.jsonl", "train": "math_train.jsonl"}

SOLVE_PROMPT = (
    "Solve the following math problem. Reason step by step, and put your final answer "
    "within \\boxed{{}}.\n\nProblem: {problem}"
)


def _level(raw) -> int | None:
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and raw.startswith("Level ") and raw[6:].isdigit():
        return int(raw[6:])
    return None  # the full splits have a few "Level ?" rows


@cache
def _read(path: Path, graded: bool) -> tuple[Sample, ...]:
    """The problems of one file. ``graded`` (an evaluation split): each must have a reference
    answer, its ``answer`` field or else the ``\\boxed{}`` of its solution; training rows need
    only their solution."""
    samples = []
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        line_no = e.object[: e.start].count(b"\n") + 1
        raise UserError(f"{path}:{line_no}: not UTF-8 text (byte {e.object[e.start]:#04x})") from None
    lines = text.split("\n")  # not splitlines(): JSON strings may hold U+2028 and friends
    for n, line in enumerate(lines[:-1] if lines[-1] == "" else lines, 1):
        try:
            row = json.loads(line)
            answer = row.get("answer") or last_boxed(row["solution"])
            samples.append(Sample(
                id=row["unique_id"],
                task=row["problem"],
                data={"answer": answer, "solution": row["solution"],
                      "level": _level(row.get("level")), "subject": row.get("subject") or row.get("type")},
            ))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:  # not an object, a key missing
            raise UserError(f"{path}:{n}: expected a JSON object with unique_id, problem, solution ({e})") from None
        if graded and not answer:  # it would be graded against nothing: never a success, never an error
            raise UserError(f"{path}:{n}: no reference answer (neither an `answer` field nor a \\boxed{{}} "
                            "in its solution)")
    if not samples:  # an empty split would run nothing and still exit 0
        raise UserError(f"{path}: no problems in it (an empty file)")
    return tuple(samples)


DATA_ENV = "MATH_DATA"


def math_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The MATH data folder: the ``data_dir`` setting, else $MATH_DATA."""
    return data_dir(DATA_ENV, explicit, wrong="not a folder (expected the MATH jsonl files)",
                    missing=f"MATH data not found: set {DATA_ENV} to a folder holding math500_test.jsonl, "
                    "math_test.jsonl and math_train.jsonl (e.g. ../shared/data/math)")


@register_benchmark
class MathBenchmark(Benchmark):
    name = "math"
    splits = ("math500", "test")
    default_splits = ("math500",)
    planner_prompt = MATH_PLAN_PROMPT  # harness.core.prompts: shared with the collector CLI
    plan_temperature = 0.8  # SPEC section 2
    after_run_rates = {"boxed": "replies with a \\boxed answer"}
    reply_tokens = 320
    cpu_limit = 10

    def _load(self, split: str) -> tuple[Sample, ...]:
        return _read(self.data_files(split)[0], split != "train")

    def data_files(self, split: str) -> list[Path]:
        """The split's file, which must exist (its fingerprint is taken before it is read)."""
        path = math_dir(self.params.get("data_dir")) / FILES[split]
        if not path.exists():
            raise UserError(f"MATH split {split!r}: {path} is missing (expected {FILES[split]})")
        return [path]

    @classmethod
    def report_tables(cls, db, baseline, marks):
        from interlat_bench.results import report

        return [report.math_table(db, baseline, marks)]  # overall, by level, by subject

    def samples(self, split: str, limit: int | None = None) -> list[Sample]:
        if split not in FILES:
            raise UserError(f"math has no split {split!r} (choose from {', '.join(self.splits)})")
        rows = self._load(split)
        return list(rows[:limit] if limit is not None else rows)

    def train_samples(self, limit: int | None = None, detours: int = 0) -> list[Sample]:
        # Training conversations: problem -> reference solution. Rows without a parsable
        # answer (two `\boxed 2` rows) still carry a valid solution, so they stay.
        rows = self._load("train")[:limit] if limit is not None else self._load("train")
        return [Sample(s.id, s.task, {**s.data, "conversation": [
            {"role": "user", "content": SOLVE_PROMPT.format(problem=s.task)},
            {"role": "assistant", "content": s.data["solution"]},
        ]}) for s in rows]

    def single_reply_prompt(self, sample: Sample) -> str:
        return SOLVE_PROMPT.format(problem=sample.task)

    def play(self, sample: Sample, agent: Agent, message) -> Record:
        agent.begin(self.single_reply_prompt(sample), message, sample)
        reply = agent.respond()
        t0 = time.perf_counter()
        predicted = last_boxed(reply)
        correct = is_equivalent(sample.data["answer"], predicted)
        grading_ms = (time.perf_counter() - t0) * 1000
        return Record(
            sample_id=sample.id,
            success=correct,
            score=float(correct),
            metrics={"level": sample.data["level"], "subject": sample.data["subject"],
                     "predicted": predicted, "gold": sample.data["answer"], "output": reply,
                     "boxed": int(predicted is not None),
                     **agent.episode_metrics()},
            timings_ms={**agent.timings_ms(), "grading": grading_ms},
        )
