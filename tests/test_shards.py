"""Shard files written by workers and the single-writer ingest step."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from contextlib import contextmanager

import pytest

from interlat_bench.harness.core.errors import UserError
from interlat_bench.results.shards import (
    RUN_FILE,
    ShardWriter,
    ingest,
    pending_ids,
    read_shard,
    resume_ids,
    shard_files,
)
from interlat_bench.results.store import Store


@contextmanager
def held_by_other_process(path):
    script = textwrap.dedent(
        f"""
        import time, duckdb
        con = duckdb.connect({str(path)!r})
        print("ready", flush=True)
        time.sleep(120)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()


def sample(i, **over):
    row = {
        "sample_id": str(i),
        "success": i % 3 == 0,
        "score": float(i % 3 == 0),
        "steps": i,
        "metrics": {"i": i},
    }
    row.update(over)
    return row


def timing(i, stage="generate", ms=10.0):
    return {"sample_id": str(i), "stage": stage, "ms": ms}


def counts(store, run_key=None):
    with store.reader() as con:
        where = "" if run_key is None else f"WHERE run_key = '{run_key}'"
        s = con.execute(f"SELECT count(*), count(DISTINCT sample_id) FROM samples {where}").fetchone()
        t = con.execute(f"SELECT count(*) FROM timings {where}").fetchone()[0]
    return s[0], s[1], t


def test_append_writes_one_complete_shard_per_call(tmp_path):
    writer = ShardWriter(tmp_path, "k1")
    first = writer.append([sample(0), sample(1)], [timing(0), timing(1)])
    second = writer.append([sample(2)], [])
    assert first != second
    assert first.parent == tmp_path / "k1"
    assert re.fullmatch(r"\d+-\d+-\d+\.jsonl", first.name)
    assert shard_files(tmp_path / "k1") == [first, second]
    rows = read_shard(first)
    assert [r["table"] for r in rows] == ["samples", "samples", "timings", "timings"]
    assert all(r["run_key"] == "k1" for r in rows)
    assert rows[0]["metrics"] == {"i": 0} and rows[0]["created_at"]
    assert not [p for p in (tmp_path / "k1").iterdir() if p.name.endswith(".tmp")]
    assert writer.append([], []) is None


def test_append_validates_rows(tmp_path):
    writer = ShardWriter(tmp_path, "k1")
    with pytest.raises(ValueError, match="unknown samples columns"):
        writer.append([{"sample_id": "1", "succes": True}])
    with pytest.raises(ValueError, match="writer is for"):
        writer.append([{"sample_id": "1", "run_key": "other"}])
    with pytest.raises(ValueError):
        ShardWriter(tmp_path, "../escape")
    assert not (tmp_path / "k1").exists() or not list((tmp_path / "k1").iterdir())


def test_write_run_is_atomic_and_keeps_created_at(tmp_path):
    writer = ShardWriter(tmp_path, "k1")
    writer.write_run({"method": "latent", "status": "running", "spec": {"a": 1}})
    first = json.loads((tmp_path / "k1" / RUN_FILE).read_text())
    writer.write_run({"method": "latent", "status": "done", "spec": {"a": 1}})
    second = json.loads((tmp_path / "k1" / RUN_FILE).read_text())
    assert first["run_key"] == "k1" and first["spec"] == {"a": 1}
    assert second["status"] == "done"
    assert second["created_at"] == first["created_at"]
    assert sorted(p.name for p in (tmp_path / "k1").iterdir()) == [RUN_FILE]


def test_pending_ids_ignore_errors_tmp_files_and_other_runs(tmp_path):
    ShardWriter(tmp_path, "k1").append([sample(0), sample(1), sample(2, error="timeout")])
    ShardWriter(tmp_path, "k2").append([sample(5)])
    # a worker killed mid-write leaves a partial temp file behind
    # (complete lines, but never renamed into place: not a shard yet)
    (tmp_path / "k1" / ".123-1-0.jsonl.99.0.tmp").write_text(
        '{"table": "samples", "sample_id": "9", "success": true}\n'
    )
    assert pending_ids(tmp_path, "k1") == {"0", "1"}
    assert pending_ids(tmp_path, "k2") == {"5"}
    assert pending_ids(tmp_path, "missing") == set()


def test_ingest_loads_everything_then_deletes_shards(tmp_path):
    root, store = tmp_path / "shards", Store(tmp_path / "db" / "results.duckdb")
    writer = ShardWriter(root, "k1")
    writer.write_run(
        {"method": "latent", "benchmark": "math", "split": "test", "seed": 1, "status": "running"}
    )
    writer.append([sample(i) for i in range(3)], [timing(i) for i in range(3)])
    writer.append([sample(3)], [timing(3, "encode", 1.0), timing(3, "decode", 2.0)])
    tmp = root / "k1" / ".1-1-9.jsonl.1.0.tmp"
    tmp.write_text('{"table": "samples", "sample_id": "99", "success": true}\n{"table": "samples", "sam')

    with writer.alive():  # the run is still computing
        result = ingest(store, root)

        assert result == {"runs": 1, "shards": 2, "samples": 4, "timings": 5, "skipped": 0, "bad_files": 0,
                          "interrupted": 0}
        assert counts(store) == (4, 4, 5)
        assert shard_files(root / "k1") == []
        assert tmp.exists()  # ignored, not loaded and not deleted
        assert (root / "k1" / RUN_FILE).exists()
        with store.reader() as con:
            assert con.execute("SELECT method, seed, status FROM runs").fetchall() == [("latent", 1, "running")]
            assert con.execute("SELECT count(*) FROM samples WHERE sample_id = '99'").fetchone() == (0,)
        # nothing new: the database is not even opened
        assert ingest(store, root) == {
            "runs": 0,
            "shards": 0,
            "samples": 0,
            "timings": 0,
            "skipped": 0,
            "bad_files": 0,
            "interrupted": 0,
        }
    # a rewritten run.json is picked up again
    writer.write_run({"method": "latent", "benchmark": "math", "split": "test", "seed": 1, "status": "done"})
    assert ingest(store, root)["runs"] == 1
    with store.reader() as con:
        assert con.execute("SELECT status FROM runs").fetchall() == [("done",)]


def test_ingest_is_idempotent_after_a_crash_between_commit_and_delete(tmp_path):
    root, store = tmp_path / "shards", Store(tmp_path / "results.duckdb")
    writer = ShardWriter(root, "k1")
    writer.write_run({"method": "text", "status": "running"})
    for start in (0, 5):
        writer.append(
            [sample(i) for i in range(start, start + 5)], [timing(i) for i in range(start, start + 5)]
        )
    backup = tmp_path / "backup"
    shutil.copytree(root, backup)

    ingest(store, root)
    before = counts(store)
    # simulate: committed, but the shard files were not deleted
    shutil.rmtree(root)
    shutil.copytree(backup, root)
    again = ingest(store, root)

    assert again["samples"] == 10 and again["shards"] == 2
    assert counts(store) == before == (10, 10, 10)
    with store.reader() as con:
        assert con.execute("SELECT count(*) FROM runs").fetchone() == (1,)


def test_resume_skips_ingested_and_pending_samples(tmp_path):
    root, store = tmp_path / "shards", Store(tmp_path / "results.duckdb")
    all_ids = [str(i) for i in range(20)]

    # first attempt: samples 0..9 finished and ingested
    first = ShardWriter(root, "k1")
    first.write_run({"method": "latent", "status": "running"})
    for i in range(10):
        first.append([sample(i)], [timing(i)])
    ingest(store, root)
    assert resume_ids(store, root, "k1") == set(all_ids[:10])

    # second attempt of the same grid with a bigger limit: only 10..19 run
    second = ShardWriter(root, "k1")
    todo = [i for i in all_ids if i not in resume_ids(store, root, "k1")]
    assert todo == all_ids[10:]
    for i in todo[:5]:
        second.append([sample(int(i))], [timing(int(i))])
    # killed here: the five flushed samples are pending, not yet in the database
    assert store.finished_ids("k1") == set(all_ids[:10])
    assert resume_ids(store, root, "k1") == set(all_ids[:15])

    third = ShardWriter(root, "k1")
    for i in [i for i in all_ids if i not in resume_ids(store, root, "k1")]:
        third.append([sample(int(i))], [timing(int(i))])
    ingest(store, root)

    assert counts(store, "k1") == (20, 20, 20)
    assert store.finished_ids("k1") == set(all_ids)


def test_a_killed_run_becomes_interrupted_and_a_live_one_stays_running(tmp_path):
    root, store = tmp_path / "shards", Store(tmp_path / "results.duckdb")
    live, dead = ShardWriter(root, "live"), ShardWriter(root, "dead")
    for w in (live, dead):
        w.write_run({"method": "latent", "benchmark": "math", "split": "test", "seed": 0, "status": "running"})
        w.append([sample(1)])
    script = ("import fcntl, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_SH); "
              "print('ready', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", script, str(root / "live" / ".alive")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        assert ingest(store, root)["interrupted"] == 1
        with store.reader() as con:
            assert dict(con.execute("SELECT run_key, status FROM runs").fetchall()) == {
                "live": "running", "dead": "interrupted"}
    finally:
        holder.kill()  # as SIGKILL would: the kernel drops its lock
        holder.wait(timeout=30)
        holder.stdout.close()
    assert ingest(store, root)["interrupted"] == 1  # the database alone says it was running
    with store.reader() as con:
        assert con.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchone() == (0,)


def test_errored_sample_is_retried_and_the_finished_attempt_wins(tmp_path):
    root, store = tmp_path / "shards", Store(tmp_path / "results.duckdb")
    writer = ShardWriter(root, "k1")
    writer.append(
        [sample(0, success=None, error="OOM")], [timing(0, "generate", 999.0), timing(0, "oom", 1.0)]
    )
    assert pending_ids(root, "k1") == set()  # errored: to be retried
    writer.append([sample(0)], [timing(0, "generate", 5.0)])
    writer.append([sample(0, error="late duplicate failure")], [timing(0, "generate", 777.0)])

    ingest(store, root)

    with store.reader() as con:
        assert con.execute("SELECT success, error FROM samples").fetchall() == [(True, None)]
        assert con.execute("SELECT stage, ms FROM timings").fetchall() == [("generate", 5.0)]
    # a later failing retry of the finished sample does not replace it
    writer.append([sample(0, error="flaky")], [timing(0, "generate", 123.0)])
    assert ingest(store, root)["skipped"] == 1
    with store.reader() as con:
        assert con.execute("SELECT error FROM samples").fetchall() == [(None,)]
        assert con.execute("SELECT ms FROM timings").fetchall() == [(5.0,)]


BAD_LINES = {
    "not json": ("this is not json", "not JSON"),
    "wrong type": ('{"table": "samples", "sample_id": "s9", "success": "yes"}', "samples.success is str"),
    "no sample_id": ('{"table": "samples", "success": true}', "samples row without sample_id"),
    "extra column": ('{"table": "samples", "sample_id": "s9", "colour": "red"}', "unknown samples column(s) colour"),
    "timing ms text": ('{"table": "timings", "sample_id": "s9", "stage": "wall", "ms": "fast"}', "timings.ms is str"),
    "bool steps": ('{"table": "samples", "sample_id": "s9", "steps": true}', "samples.steps is bool"),
}


@pytest.mark.parametrize("kind", BAD_LINES)
def test_a_malformed_shard_is_set_aside_and_the_rest_ingested(tmp_path, kind):
    root, store = tmp_path / "shards", Store(tmp_path / "results.duckdb")
    ShardWriter(root, "k1").append([sample(1)])
    ShardWriter(root, "k2").append([sample(2)])
    line, problem = BAD_LINES[kind]
    bad = root / "k1" / "1-1-0.jsonl"
    bad.write_text(json.dumps(sample(3) | {"table": "samples"}) + "\n" + line + "\n")
    said = []
    result = ingest(store, root, warn=said.append)
    assert result["bad_files"] == 1 and result["samples"] == 2  # both valid shards, nothing of the bad one
    assert counts(store)[1] == 2
    assert not bad.exists() and (root / ".quarantine" / "k1" / bad.name).exists()
    assert len(said) == 1 and str(bad) in said[0] and ":2: " in said[0] and problem in said[0]
    assert ingest(store, root, warn=said.append)["bad_files"] == 0  # set aside once, never again


@pytest.mark.parametrize("run, problem", [
    ('{"run_key": "k1", "seed": "zero"}', "runs.seed is str"),
    ('{"run_key": "k1", "created_at": "yesterday"}', "runs.created_at is 'yesterday', expected an ISO-8601 time"),
    ('{"run_key": "k1", "updated_at": 5}', "runs.updated_at is 5"),
    ('{"run_key": "k1", "spec": "{not json"}', "runs.spec is str"),
])
def test_a_malformed_run_file_is_set_aside(tmp_path, run, problem):
    root, store = tmp_path / "shards", Store(tmp_path / "results.duckdb")
    w = ShardWriter(root, "k1")
    w.append([sample(1)])
    (root / "k1" / "run.json").write_text(run)
    said = []
    result = ingest(store, root, warn=said.append)
    assert result["bad_files"] == 1 and result["samples"] == 1
    assert problem in said[0] and (root / ".quarantine" / "k1" / "run.json").exists()
    assert ingest(store, root, warn=said.append)["bad_files"] == 0  # set aside once: later ingests go on


def test_ingest_lock_conflict_keeps_shards(tmp_path):
    root, db = tmp_path / "shards", tmp_path / "results.duckdb"
    store = Store(db)
    store.migrate()
    ShardWriter(root, "k1").append([sample(0), sample(1)])
    with held_by_other_process(db) as proc, pytest.raises(UserError, match=f"PID {proc.pid}"):
        ingest(store, root)
    assert len(shard_files(root / "k1")) == 1
    assert pending_ids(root, "k1") == {"0", "1"}
    assert ingest(store, root)["samples"] == 2


def test_add_writes_fast_samples_together_slow_ones_at_once_and_flush_writes_the_rest(tmp_path):
    import time

    writer = ShardWriter(tmp_path, "k1")
    first = writer.add([sample(0)], [timing(0)])
    assert first is not None and len(shard_files(tmp_path / "k1")) == 1  # nothing written lately: now
    for i in range(1, 50):  # a fast stream: buffered
        assert writer.add([sample(i)], [timing(i)], flush_after_s=60) is None
    assert len(shard_files(tmp_path / "k1")) == 1 and pending_ids(tmp_path, "k1") == {"0"}
    with pytest.raises(ValueError, match="unknown samples columns"):  # a bad row fails at once, not at flush
        writer.add([{"sample_id": "x", "succes": True}])
    rest = writer.flush()
    assert len(read_shard(rest)) == 2 * 49 and writer.flush() is None
    assert pending_ids(tmp_path, "k1") == {str(i) for i in range(50)}
    # A row left in the buffer behind a slow sample is written by the timer, unasked.
    writer.add([sample(50)], flush_after_s=0.3)
    time.sleep(1.0)
    assert "50" in pending_ids(tmp_path, "k1")
    store = Store(tmp_path / "r.duckdb")
    assert ingest(store, tmp_path)["samples"] == 51


def test_a_run_interrupted_by_ctrl_c_keeps_the_samples_it_finished(tmp_path, monkeypatch):
    """The runner writes through ``add``; whatever ends its loop, the buffer is flushed."""
    from interlat_bench.harness import playing, runner
    from interlat_bench.harness.core.runspec import RunSpec

    played = []

    def records(self, todo, **options):
        from interlat_bench.benchmarks.base import Record

        for s in todo:
            if len(played) == 5:
                raise KeyboardInterrupt
            played.append(s.id)
            yield Record(sample_id=s.id, success=True, score=1.0, steps=1)

    monkeypatch.setattr(playing.Player, "records", records)
    spec = RunSpec.make(method="random", benchmark="probe", split="test", receiver_model=None, limit=20)
    store = Store(tmp_path / "results" / "r.duckdb")
    with pytest.raises(KeyboardInterrupt):
        runner.run_cell(spec, store, tmp_path / "shards")
    assert pending_ids(tmp_path / "shards", spec.run_key) == set(played) and len(played) == 5


def test_the_fast_reader_and_the_line_by_line_reader_load_the_same(tmp_path, monkeypatch):
    """DuckDB parses valid shards in one pass; the Python reader is the fallback that finds a
    bad file. Both must leave the same rows: retries, errors, timings, a stored finished row."""
    import duckdb

    from interlat_bench.results import shards

    def write(root):
        a = ShardWriter(root, "k1")
        a.append([sample(i) for i in range(4)], [timing(i) for i in range(4)])
        a.append([sample(1, error="boom")], [timing(1, "generate", 99.0)])  # a later failure: kept out
        a.append([sample(2, score=0.5)], [timing(2, "generate", 7.0), timing(2, "decode", 1.0)])  # a retry
        a.append([], [timing(9, "env", 3.0)])  # timings alone
        b = ShardWriter(root, "k2")
        b.append([sample(5, error="flaky"), {"sample_id": 6, "success": True}], [timing(5)])

    def load(root, db, fast):
        if not fast:
            monkeypatch.setattr(shards, "_parse_fast", lambda files: None)
        store = Store(db)
        with store.writer() as con:  # a finished row is already stored: a new error must not replace it
            store.insert_samples(con, [{"run_key": "k2", "sample_id": "5", "success": True, "score": 1.0}])
        got = ingest(store, root)
        monkeypatch.undo()
        con = duckdb.connect(str(db), read_only=True)
        rows = con.execute("SELECT run_key, sample_id, success, score, steps, error, metrics::VARCHAR FROM samples "
                           "ORDER BY ALL").fetchall()
        times = con.execute("SELECT * FROM timings ORDER BY ALL").fetchall()
        con.close()
        return got, [r[:6] + (json.loads(r[6]) if r[6] else None,) for r in rows], times

    write(tmp_path / "a")
    files = [(k, p) for k in ("k1", "k2") for p in shard_files(tmp_path / "a" / k)]
    assert shards._parse_fast(files) is not None  # valid shards take the fast path
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    fast, slow = load(tmp_path / "a", tmp_path / "fast.duckdb", True), load(tmp_path / "b", tmp_path / "slow.duckdb", False)
    assert fast == slow
    got, rows, times = fast
    assert got["skipped"] == 1 and ("k2", "5", True, 1.0, None, None, None) in rows  # finished row kept
    assert ("k1", "2", False, 0.5, 2, None, {"i": 2}) in rows and ("k2", "6", True, None, None, None, None) in rows
    assert ("k1", "2", "generate", 7.0) in times and ("k1", "1", "generate", 10.0) in times
    assert ("k1", "9", "env", 3.0) in times and not any(t[:2] == ("k2", "5") for t in times)
    # One malformed line anywhere: the fast reader declines, the slow one sets that file aside.
    bad = tmp_path / "c" / "k1"
    ShardWriter(tmp_path / "c", "k1").append([sample(0)])
    (bad / "1-1-1.jsonl").write_text('{"table": "samples", "sample_id": "x", "success": "yes"}\n')
    assert shards._parse_fast([("k1", p) for p in shard_files(bad)]) is None


def test_a_run_json_written_before_the_model_columns_were_renamed_keeps_its_models(tmp_path):
    root, store = tmp_path / "shards", Store(tmp_path / "results.duckdb")
    for key, models in (("k1", {"sender": "qwen", "receiver": "llama"}), ("k2", {"sender": 3})):
        (root / key).mkdir(parents=True)  # as the code before the rename wrote them
        (root / key / RUN_FILE).write_text(json.dumps({"method": "latent", "benchmark": "probe", "split": "test",
                                                       "seed": 0, "status": "complete", **models}))
    assert ingest(store, root)["runs"] == 1  # k2's run.json is set aside: its sender is no model name
    with store.reader() as con:
        assert con.execute("SELECT run_key, sender_model, receiver_model FROM runs").fetchall() == \
            [("k1", "qwen", "llama")]
