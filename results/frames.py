"""pandas views of the results database for notebooks: one DataFrame per table, run
parameters spread into columns (``method_params.plan_tokens``, ``benchmark_params.max_steps``).

    from interlat_bench.results.frames import runs_df, samples_df, timings_df
    samples_df("interlat-results/interlat.duckdb").groupby("method").success.mean()

The report's tables are DataFrames too: ``interlat_bench.results.report.tables(db)``.
"""

from __future__ import annotations

import json
import os

import pandas as pd

from interlat_bench.results.store import Store

_RUN_COLUMNS = ["run_key", "method", "benchmark", "split", "sender_model", "receiver_model", "seed", "status", "device",
                "git_sha", "created_at", "updated_at"]


def _spread(frame: pd.DataFrame, column: str, prefix: str = "") -> pd.DataFrame:
    """A JSON text column spread into one column per (nested) key, dot-separated."""
    values = [json.loads(v) if isinstance(v, str) else (v or {}) for v in frame.pop(column)]
    spread = pd.json_normalize(values, sep=".").add_prefix(prefix)
    spread.index = frame.index
    return pd.concat([frame, spread.drop(columns=[c for c in spread.columns if c in frame.columns])], axis=1)


def runs_df(db: str | os.PathLike[str]) -> pd.DataFrame:
    """One line per run: its identity columns and every spec field as a column."""
    with Store(db).reader() as con:
        frame = con.execute(f"SELECT {', '.join(_RUN_COLUMNS)}, CAST(spec AS VARCHAR) AS spec FROM runs "
                            "ORDER BY created_at, run_key").df()
    # The spec's "sender" and "receiver" (the run key's names for the model references) are
    # the sender_model and receiver_model columns already.
    return _spread(frame, "spec").drop(columns=["sender", "receiver"], errors="ignore")


def samples_df(db: str | os.PathLike[str]) -> pd.DataFrame:
    """One line per sample: its run's identity, success, score, steps, error, and each
    metrics JSON key as a ``metrics.<key>`` column."""
    with Store(db).reader() as con:
        frame = con.execute("""
            SELECT s.run_key, r.method, r.benchmark, r.split, r.sender_model, r.receiver_model, r.seed, s.sample_id,
                   s.success, s.score, s.steps, s.error, CAST(s.metrics AS VARCHAR) AS metrics
            FROM samples AS s JOIN runs AS r USING (run_key) ORDER BY s.run_key, s.sample_id""").df()
    return _spread(frame, "metrics", "metrics.")


def timings_df(db: str | os.PathLike[str]) -> pd.DataFrame:
    """One line per sample and stage (sender, adapter, receiver, env / grading, wall), in ms."""
    with Store(db).reader() as con:
        return con.execute("""
            SELECT t.run_key, r.method, r.benchmark, r.split, r.device, t.sample_id, t.stage, t.ms
            FROM timings AS t JOIN runs AS r USING (run_key) ORDER BY t.run_key, t.sample_id, t.stage""").df()
