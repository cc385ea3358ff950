"""The DuckDB results store: migrations, round trips, resume ids, locks, read-only SQL."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from datetime import datetime

import duckdb
import pytest

from interlat_bench.harness.core.errors import UserError
from interlat_bench.results.store import (
    SCHEMA_VERSION,
    Store,
    apply_migrations,
    query_readonly,
    schema_version,
)


@contextmanager
def held_by_other_process(path, *, read_only=False):
    """A second Python process holding ``duckdb.connect(path)`` open; yields its Popen."""
    script = textwrap.dedent(
        f"""
        import sys, time, duckdb
        con = duckdb.connect({str(path)!r}, read_only={read_only!r})
        print("ready", flush=True)
        time.sleep(120)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "ready", f"helper process failed to open {path}"
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()


def run_row(run_key="k1", **over):
    row = {
        "run_key": run_key,
        "method": "latent",
        "benchmark": "math",
        "split": "test",
        "sender_model": "qwen",
        "receiver_model": "llama",
        "seed": 0,
        "spec": {"lr": 1e-4, "limit": 20},
        "status": "running",
        "git_sha": "abc123",
        "versions": {"torch": "2.4"},
        "device": "cpu",
    }
    row.update(over)
    return row


def test_migrations_create_schema_once_and_record_version(tmp_path):
    db = tmp_path / "sub" / "results.duckdb"
    store = Store(db)
    with store.writer() as con:
        assert schema_version(con) == SCHEMA_VERSION
    assert db.exists()  # parent folder created
    with store.writer() as con:  # second open: nothing pending
        assert apply_migrations(con) == []
        versions = con.execute("SELECT version, applied_at FROM schema_migrations").fetchall()
        tables = {
            r[0]
            for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
            ).fetchall()
        }
        cols = dict(
            con.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'samples'"
            ).fetchall()
        )
        pk = con.execute(
            "SELECT constraint_column_names FROM duckdb_constraints() "
            "WHERE table_name = 'timings' AND constraint_type = 'PRIMARY KEY'"
        ).fetchone()[0]
    assert [v for v, _ in versions] == list(range(1, SCHEMA_VERSION + 1))
    assert all(isinstance(ts, datetime) for _, ts in versions)
    assert tables == {"schema_migrations", "runs", "samples", "timings"}
    assert cols["success"] == "BOOLEAN" and cols["score"] == "DOUBLE" and cols["steps"] == "INTEGER"
    assert cols["metrics"] == "JSON"
    assert list(pk) == ["run_key", "sample_id", "stage"]


def test_round_trip_runs_samples_timings(tmp_path):
    store = Store(tmp_path / "r.duckdb")
    with store.writer() as con:
        store.upsert_run(con, run_row(created_at=datetime(2024, 1, 1), updated_at=datetime(2024, 1, 1)))
        n = store.insert_samples(
            con,
            [
                {
                    "run_key": "k1",
                    "sample_id": "a",
                    "success": True,
                    "score": 1.0,
                    "steps": 3,
                    "metrics": {"tokens": 17, "notes": ["x"]},
                },
                {
                    "run_key": "k1",
                    "sample_id": 7,
                    "success": False,
                    "score": 0.0,
                    "steps": 9,
                    "metrics": None,
                },
            ],
        )
        t = store.insert_timings(
            con,
            [
                {"run_key": "k1", "sample_id": "a", "stage": "encode", "ms": 1.5},
                {"run_key": "k1", "sample_id": "a", "stage": "decode", "ms": 20},
            ],
        )
    assert (n, t) == (2, 2)
    with store.reader() as con:
        run = con.execute("SELECT method, seed, spec, versions, status, created_at FROM runs").fetchone()
        samples = con.execute(
            "SELECT sample_id, success, score, steps, metrics, error FROM samples ORDER BY sample_id"
        ).fetchall()
        timings = con.execute("SELECT stage, ms FROM timings ORDER BY stage").fetchall()
    assert run[0:2] == ("latent", 0)
    assert json.loads(run[2]) == {"lr": 1e-4, "limit": 20}
    assert json.loads(run[3]) == {"torch": "2.4"}
    assert run[4] == "running" and run[5] == datetime(2024, 1, 1)
    assert samples[0][:4] == ("7", False, 0.0, 9)
    assert samples[1][:4] == ("a", True, 1.0, 3)
    assert json.loads(samples[1][4]) == {"tokens": 17, "notes": ["x"]}
    assert samples[0][4] is None and samples[1][5] is None
    assert timings == [("decode", 20.0), ("encode", 1.5)]


def test_upsert_run_keeps_created_at_and_updates_status(tmp_path):
    store = Store(tmp_path / "r.duckdb")
    with store.writer() as con:
        store.upsert_run(con, run_row(created_at=datetime(2024, 1, 1), updated_at=datetime(2024, 1, 1)))
        store.upsert_run(
            con,
            run_row(
                status="done",
                git_sha="def456",
                created_at=datetime(2025, 5, 5),
                updated_at=datetime(2025, 5, 6),
            ),
        )
        rows = con.execute("SELECT status, git_sha, created_at, updated_at FROM runs").fetchall()
    assert rows == [("done", "def456", datetime(2024, 1, 1), datetime(2025, 5, 6))]


def test_insert_or_replace_does_not_duplicate(tmp_path):
    store = Store(tmp_path / "r.duckdb")
    rows = [{"run_key": "k1", "sample_id": str(i), "success": i % 2 == 0} for i in range(5)]
    with store.writer() as con:
        store.insert_samples(con, rows)
        store.insert_samples(con, [dict(r, success=True) for r in rows])
        store.insert_timings(con, [{"run_key": "k1", "sample_id": "0", "stage": "gen", "ms": 1.0}])
        store.insert_timings(con, [{"run_key": "k1", "sample_id": "0", "stage": "gen", "ms": 2.0}])
        assert con.execute("SELECT count(*), bool_and(success) FROM samples").fetchone() == (5, True)
        assert con.execute("SELECT ms FROM timings").fetchall() == [(2.0,)]


def test_within_one_batch_the_last_row_wins(tmp_path):
    # DuckDB itself would keep the first of two conflicting rows in one INSERT OR REPLACE.
    store = Store(tmp_path / "r.duckdb")
    with store.writer() as con:
        store.insert_samples(
            con,
            [
                {"run_key": "k", "sample_id": "s", "score": 1.0},
                {"run_key": "k", "sample_id": "s", "score": 2.0},
            ],
        )
        assert con.execute("SELECT score FROM samples").fetchall() == [(2.0,)]


def test_finished_ids_excludes_errored(tmp_path):
    store = Store(tmp_path / "r.duckdb")
    with store.writer() as con:
        store.insert_samples(
            con,
            [
                {"run_key": "k1", "sample_id": "ok1", "success": True},
                {"run_key": "k1", "sample_id": "ok2", "success": False},
                {"run_key": "k1", "sample_id": "bad", "error": "CUDA OOM"},
                {"run_key": "other", "sample_id": "x", "success": True},
            ],
        )
    assert store.finished_ids("k1") == {"ok1", "ok2"}
    assert store.finished_ids("nope") == set()


def test_errored_retry_never_replaces_a_finished_sample(tmp_path):
    store = Store(tmp_path / "r.duckdb")
    with store.writer() as con:
        store.insert_samples(con, [{"run_key": "k", "sample_id": "s", "success": True}])
        written = store.insert_samples(con, [{"run_key": "k", "sample_id": "s", "error": "boom"}])
        assert written == 0
        assert con.execute("SELECT success, error FROM samples").fetchall() == [(True, None)]
        # ... but a finished retry replaces an errored row
        store.insert_samples(con, [{"run_key": "k", "sample_id": "e", "error": "boom"}])
        store.insert_samples(con, [{"run_key": "k", "sample_id": "e", "success": False}])
        assert con.execute("SELECT success, error FROM samples WHERE sample_id = 'e'").fetchall() == [
            (False, None)
        ]


def test_reader_on_missing_file_is_empty_and_creates_nothing(tmp_path):
    db = tmp_path / "none" / "results.duckdb"
    store = Store(db)
    assert store.finished_ids("k1") == set()
    with store.reader() as con:
        assert con.execute("SELECT count(*) FROM samples").fetchone() == (0,)
    assert not db.exists() and not db.parent.exists()


def test_unknown_columns_are_rejected(tmp_path):
    store = Store(tmp_path / "r.duckdb")
    with store.writer() as con, pytest.raises(ValueError, match="bogus"):
        store.insert_samples(con, [{"run_key": "k", "sample_id": "1", "bogus": 1}])


def test_newer_schema_is_refused(tmp_path):
    store = Store(tmp_path / "r.duckdb")
    with store.writer() as con:
        con.execute("INSERT INTO schema_migrations VALUES (?, now()::TIMESTAMP)", [SCHEMA_VERSION + 1])
    with pytest.raises(UserError, match="newer"), store.reader():
        pass


def test_lock_conflict_names_the_holder_pid(tmp_path):
    db = tmp_path / "r.duckdb"
    Store(db).migrate()
    with held_by_other_process(db) as proc:
        with pytest.raises(UserError) as info, Store(db).writer():
            pass
        message = str(info.value)
        assert f"PID {proc.pid}" in message
        assert str(db) in message
        assert "interlat-bench ingest" in message
        assert "\n" not in message
        # readers are refused too while a writer holds the file
        with pytest.raises(UserError, match=f"PID {proc.pid}"):
            Store(db).finished_ids("k")


def test_lock_wait_retries_until_the_holder_exits(tmp_path):
    db = tmp_path / "r.duckdb"
    Store(db).migrate()
    with held_by_other_process(db) as proc:
        store = Store(db, lock_wait=20.0)
        start = time.monotonic()
        # release the lock shortly after the retry loop has started
        killer = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"import os, signal, time; time.sleep(0.5); os.kill({proc.pid}, signal.SIGKILL)",
            ]
        )
        try:
            with store.writer() as con:
                assert con.execute("SELECT 1").fetchone() == (1,)
        finally:
            killer.wait(timeout=30)
        assert time.monotonic() - start >= 0.4


def _seeded(tmp_path):
    db = tmp_path / "r.duckdb"
    store = Store(db)
    with store.writer() as con:
        store.upsert_run(con, run_row())
        store.insert_samples(con, [{"run_key": "k1", "sample_id": str(i), "success": True} for i in range(4)])
    return db


def test_query_readonly_selects(tmp_path):
    db = _seeded(tmp_path)
    columns, rows = query_readonly(db, "SELECT run_key, count(*) AS n FROM samples GROUP BY run_key")
    assert columns == ["run_key", "n"] and rows == [("k1", 4)]
    columns, rows = query_readonly(db, "PIVOT samples ON success USING count(*) GROUP BY run_key")
    assert rows == [("k1", 4)]


@pytest.mark.parametrize(
    "sql",
    [
        "delete from samples",
        "DELETE FROM samples WHERE true",
        "select 1; delete from samples",
        "update samples set success = false",
        "insert into samples (run_key, sample_id) values ('x', 'y')",
        "create table t (a int)",
        "drop table samples",
        "alter table samples add column z int",
        "attach 'other.duckdb' as other",
        "with d as (delete from samples returning *) select * from d",
    ],
)
def test_query_readonly_refuses_writes_and_data_stays(tmp_path, sql):
    db = _seeded(tmp_path)
    with pytest.raises(UserError, match="^read-only: "):
        query_readonly(db, sql)
    assert query_readonly(db, "SELECT count(*) FROM samples")[1] == [(4,)]
    assert not (tmp_path / "other.duckdb").exists()


def test_query_readonly_refuses_copy_to_file(tmp_path):
    db = _seeded(tmp_path)
    out = tmp_path / "dump.csv"
    for sql in (
        f"COPY samples TO '{out}'",
        f"COPY (SELECT 1) TO '{out}'",
        f"EXPORT DATABASE '{tmp_path / 'exp'}'",
    ):
        # refused up front by statement kind (DuckDB's read-only mode alone would allow COPY TO)
        with pytest.raises(UserError, match="^read-only: (COPY|EXPORT) statements are not allowed"):
            query_readonly(db, sql)
    assert not out.exists() and not (tmp_path / "exp").exists()


def test_query_readonly_errors_are_user_errors(tmp_path):
    db = _seeded(tmp_path)
    with pytest.raises(UserError, match="^sql: .*syntax"):
        query_readonly(db, "selec 1")
    with pytest.raises(UserError, match="no results database"):
        query_readonly(tmp_path / "missing.duckdb", "select 1")


def test_query_readonly_really_opens_read_only(tmp_path):
    db = _seeded(tmp_path)
    # a read-only holder does not block another read-only connection, but a writer would
    with held_by_other_process(db, read_only=True):
        assert query_readonly(db, "SELECT count(*) FROM runs")[1] == [(1,)]
        with pytest.raises(duckdb.IOException):
            duckdb.connect(str(db)).close()


def test_a_version_1_database_is_migrated_when_first_read_and_keeps_its_rows(tmp_path):
    from interlat_bench.results.store import MIGRATIONS

    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))  # what an earlier interlat-bench wrote: schema v1
    con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMP)")
    for statement in MIGRATIONS[1]:
        con.execute(statement)
    con.execute("INSERT INTO schema_migrations VALUES (1, now()::TIMESTAMP)")
    con.execute("INSERT INTO runs (run_key, method, sender, receiver, status) "
                "VALUES ('k1', 'latent', 'qwen', 'llama', 'complete')")
    con.close()
    with Store(db).reader() as con:  # the model columns renamed (v4), their values kept
        assert con.execute("SELECT run_key, method, sender_model, receiver_model, tags, timing_only FROM runs"
                           ).fetchall() == [("k1", "latent", "qwen", "llama", None, None)]
        assert schema_version(con) == SCHEMA_VERSION == 4
