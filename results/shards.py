"""Shard files: how workers record results without ever opening DuckDB.

Layout under a shard root (one folder per run)::

    <root>/<run_key>/run.json                        the run's row (rewritten atomically)
    <root>/<run_key>/<time_ns>-<pid>-<seq>.jsonl     one file per flush, never modified

A run adds each finished sample with ``ShardWriter.add``, which writes a shard at most once
per ``FLUSH_AFTER_S``: a slow sample (an LLM episode) gets a file of its own at once, a
stream of fast ones (reference policies) shares one file per second, so ingest reads and
deletes thousands of files fewer. ``flush`` (on every exit path of a run, Ctrl-C included)
writes the rest, and a timer writes a buffer left waiting behind a slow sample; a SIGKILL
loses at most the last second of finished samples, which the next run computes again, and
never a row already written.

Each shard line is a JSON object tagged ``"table": "samples"`` or ``"table": "timings"``.
Files are written to a temporary name in the same folder, fsynced and renamed into place,
so a reader sees either a whole shard or none; leftovers of killed workers (``*.tmp``)
are ignored. ``ingest`` (the single DuckDB writer) loads everything in one transaction
and deletes the shard files it loaded only after the commit. ``run.json`` stays (a running
worker may rewrite it at any time); after loading it, ingest keeps a copy in
``.run.json.ingested`` and reloads run.json only when its content differs.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from interlat_bench.harness.core.atomic import fsync_dir, write_text
from interlat_bench.results.store import (
    RUN_COLUMNS,
    SAMPLE_COLUMNS,
    SAMPLE_SCHEMA,
    TIMING_COLUMNS,
    TIMING_SCHEMA,
    Store,
    _json_default,
    to_json,
    to_timestamp,
    utcnow,
)

RUN_FILE = "run.json"
# runs columns renamed since a run.json may have been written (store migration 4).
RENAMED = {"sender": "sender_model", "receiver": "receiver_model"}
RUN_MARKER = ".run.json.ingested"
ALIVE_FILE = ".alive"  # a running run holds a lock on it; the kernel drops the lock if the process dies
FLUSH_AFTER_S = 1.0
SHARD_RE = re.compile(r"^(?P<ns>\d+)-(?P<pid>\d+)-(?P<seq>\d+)\.jsonl$")


DEFAULT_DB_NAME = "interlat.duckdb"


def shards_dir(db: Path) -> Path:
    """Where a results database's runs write their shards until ingested: ``shards/`` beside the
    default ``interlat.duckdb``, ``<name>.shards/`` beside a database of another name, so that two
    databases in one folder never ingest each other's runs."""
    db = Path(db)
    return db.parent / ("shards" if db.name == DEFAULT_DB_NAME else f"{db.stem}.shards")


def _dumps(obj: Any) -> str:
    def default(o: Any) -> Any:
        if isinstance(o, datetime):
            return o.isoformat()
        return _json_default(o)

    return json.dumps(obj, default=default, sort_keys=True)


def _check_run_key(run_key: str) -> str:
    if not run_key or run_key in (".", "..") or "/" in run_key or "\\" in run_key:
        raise ValueError(f"run_key is not usable as a folder name: {run_key!r}")
    return run_key


class ShardWriter:
    """Appends one run's results as shard files under ``root/run_key``."""

    def __init__(self, root: str | os.PathLike[str], run_key: str) -> None:
        self.root = Path(root)
        self.run_key = _check_run_key(run_key)
        self.folder = self.root / run_key
        self._seq = itertools.count()
        self._pending: list[str] = []
        self._flushed_at = float("-inf")
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def write_run(self, row: Mapping[str, Any]) -> Path:
        """Write ``run.json`` atomically; ``created_at`` of an earlier run.json is kept."""
        unknown = set(row) - set(RUN_COLUMNS)
        if unknown:
            raise ValueError(f"unknown runs columns: {sorted(unknown)}")
        if row.get("run_key", self.run_key) != self.run_key:
            raise ValueError(f"run row is for {row['run_key']!r}, writer is for {self.run_key!r}")
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / RUN_FILE
        data = dict(row)
        data["run_key"] = self.run_key
        now = utcnow().isoformat()
        if data.get("created_at") is None:
            previous = _read_json(path)
            data["created_at"] = (previous or {}).get("created_at") or now
        if data.get("updated_at") is None:
            data["updated_at"] = now
        write_text(path, _dumps(data) + "\n")
        return path

    @contextlib.contextmanager
    def alive(self):
        """Hold this run's liveness lock while it computes: ``ingest`` marks a ``running`` run
        whose lock nobody holds (killed, even by SIGKILL) as ``interrupted``."""
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ALIVE_FILE, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def append(
        self, record_rows: Sequence[Mapping[str, Any]], timing_rows: Sequence[Mapping[str, Any]] = ()
    ) -> Path | None:
        """Write one new shard with these sample and timing rows; returns its path.

        Rows may omit ``run_key`` (the writer's is used); sample rows get ``created_at``.
        Nothing is written (None returned) for two empty lists.
        """
        if not record_rows and not timing_rows:
            return None
        return self._write(self._lines(record_rows, timing_rows))

    def add(self, record_rows: Sequence[Mapping[str, Any]], timing_rows: Sequence[Mapping[str, Any]] = (),
            flush_after_s: float = FLUSH_AFTER_S) -> Path | None:
        """Buffer these rows (checked now) and write the buffer as one shard when
        ``flush_after_s`` has passed since the last write (now, or by a timer if no other row
        comes meanwhile); returns the shard if it wrote one now."""
        lines = self._lines(record_rows, timing_rows)
        with self._lock:
            self._pending += lines
            due = time.monotonic() - self._flushed_at >= flush_after_s
            if not due and self._timer is None:
                self._timer = threading.Timer(flush_after_s, self.flush)
                self._timer.daemon = True
                self._timer.start()
        return self.flush() if due else None

    def flush(self) -> Path | None:
        """Write what ``add`` buffered (nothing buffered: nothing written, None)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            lines, self._pending = self._pending, []
            self._flushed_at = time.monotonic()
            return self._write(lines) if lines else None

    close = flush  # contextlib.closing(writer): whatever ends the loop, the buffer is written

    def _lines(self, record_rows, timing_rows) -> list[str]:
        now = utcnow().isoformat()
        lines = []
        for table, rows, columns in (
            ("samples", record_rows, SAMPLE_COLUMNS),
            ("timings", timing_rows, TIMING_COLUMNS),
        ):
            for row in rows:
                unknown = set(row) - set(columns)
                if unknown:
                    raise ValueError(f"unknown {table} columns: {sorted(unknown)}")
                if row.get("run_key", self.run_key) != self.run_key:
                    raise ValueError(f"{table} row is for {row['run_key']!r}, writer is for {self.run_key!r}")
                if row.get("sample_id") is None:
                    raise ValueError(f"{table} row without sample_id: {dict(row)!r}")
                rec = dict(row)
                rec["run_key"] = self.run_key
                rec["sample_id"] = str(rec["sample_id"])
                if table == "samples" and rec.get("created_at") is None:
                    rec["created_at"] = now
                rec["table"] = table
                lines.append(_dumps(rec))
        return lines

    def _write(self, lines: list[str]) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{time.time_ns()}-{os.getpid()}-{next(self._seq)}.jsonl"
        write_text(path, "\n".join(lines) + "\n")
        return path


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _marker_text(folder: Path) -> str | None:
    try:
        return (folder / RUN_MARKER).read_text(encoding="utf-8")
    except OSError:
        return None


def shard_files(folder: Path) -> list[Path]:
    """Completed shard files of one run folder, oldest first (temp files excluded)."""
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = SHARD_RE.match(p.name)
        if m and p.is_file():
            found.append(((int(m["ns"]), int(m["pid"]), int(m["seq"])), p))
    return [p for _, p in sorted(found)]


QUARANTINE = ".quarantine"

# Column -> accepted JSON types (None always allowed except for the keys).
_TYPES: dict[str, dict[str, tuple[type, ...]]] = {
    "samples": {"run_key": (str,), "sample_id": (str, int), "success": (bool,), "score": (int, float),
                "steps": (int,), "metrics": (dict,), "error": (str,), "created_at": (str,)},
    "timings": {"run_key": (str,), "sample_id": (str, int), "stage": (str,), "ms": (int, float)},
}
_REQUIRED = {"samples": ("sample_id",), "timings": ("sample_id", "stage", "ms")}


def _check_row(row: Any) -> str | None:
    """What is wrong with one shard line, or None."""
    if not isinstance(row, dict) or row.get("table") not in _TYPES:
        return "not a samples/timings row"
    table, types = row["table"], _TYPES[row["table"]]
    extra = sorted(set(row) - set(types) - {"table"})
    if extra:
        return f"unknown {table} column(s) {', '.join(extra)}"
    for name in _REQUIRED[table]:
        if row.get(name) is None:
            return f"{table} row without {name}"
    for name, value in row.items():
        if name == "table" or value is None:
            continue
        ok = isinstance(value, types[name]) and not (isinstance(value, bool) and bool not in types[name])
        if not ok:
            return f"{table}.{name} is {type(value).__name__} {value!r:.40}, expected {'/'.join(t.__name__ for t in types[name])}"
    return None


def read_shard(path: Path) -> list[dict[str, Any]]:
    """The rows of one shard; ValueError naming the file, line and problem if any line is
    not a well-formed samples/timings row (bad JSON, unknown column, wrong type, no key)."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{lineno}: not JSON ({exc})") from None
            problem = _check_row(row)
            if problem:
                raise ValueError(f"{path}:{lineno}: {problem}")
            rows.append(row)
    return rows


def quarantine(root: Path, path: Path) -> Path:
    """Move a malformed file out of the way (``root/.quarantine/<run_key>/``), keeping it
    for inspection; later ingests never see it again. A name already set aside there is kept:
    the newcomer gets ``name.1``, ``name.2``, ..."""
    target = root / QUARANTINE / path.parent.name / path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    for n in itertools.count(1):
        if not target.exists():
            break
        target = target.with_name(f"{path.name}.{n}")
    os.replace(path, target)
    return target


def pending_ids(root: str | os.PathLike[str], run_key: str) -> set[str]:
    """Finished (error-free) sample ids of ``run_key`` in shards not yet ingested."""
    ids: set[str] = set()
    for path in shard_files(Path(root) / run_key):
        try:
            rows = read_shard(path)
        except (OSError, ValueError):  # vanished (ingested meanwhile) or unreadable
            continue
        ids.update(str(r["sample_id"]) for r in rows if r["table"] == "samples" and r.get("error") is None)
    return ids


def _stale_running(store: Store, root: Path) -> set[str]:
    """Runs the database says are running while no process holds their liveness lock."""
    if not store.path.exists():
        return set()
    with store.reader() as con:
        running = [r[0] for r in con.execute("SELECT run_key FROM runs WHERE status = 'running'").fetchall()]
    return {k for k in running if not is_alive(root / k)}


def is_alive(folder: Path) -> bool:
    """Whether a process holds the run's liveness lock (``ShardWriter.alive``)."""
    import fcntl

    if not (folder / ALIVE_FILE).exists():
        return False
    with open(folder / ALIVE_FILE, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def _check_run(run: Any) -> str | None:
    if not isinstance(run, dict):
        return "not a JSON object"
    if (seed := run.get("seed")) is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        return f"runs.seed is {type(seed).__name__} {seed!r:.40}, expected int"
    for name in ("method", "benchmark", "split", "sender_model", "receiver_model", *RENAMED, "status", "git_sha",
                 "device"):
        if run.get(name) is not None and not isinstance(run[name], str):
            return f"runs.{name} is {type(run[name]).__name__}, expected str"
    if (n := run.get("n_samples")) is not None and (not isinstance(n, int) or isinstance(n, bool)):
        return f"runs.n_samples is {type(n).__name__} {n!r:.40}, expected int"
    if run.get("timing_only") is not None and not isinstance(run["timing_only"], bool):
        return f"runs.timing_only is {type(run['timing_only']).__name__}, expected a boolean"
    tags = run.get("tags")
    if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)):
        return f"runs.tags is {tags!r:.40}, expected a list of strings"
    for name in ("spec", "versions"):  # a string would be taken for JSON text, and fail inside the transaction
        if run.get(name) is not None and not isinstance(run[name], dict):
            return f"runs.{name} is {type(run[name]).__name__}, expected an object"
    for name in ("created_at", "updated_at"):
        try:
            to_timestamp(run.get(name))
        except (TypeError, ValueError):
            return f"runs.{name} is {run[name]!r:.40}, expected an ISO-8601 time"
    return None


def resume_ids(store: Store, root: str | os.PathLike[str], run_key: str) -> set[str]:
    """Sample ids to skip on resume: pending in shards or finished in the database.

    Shards are read before the database: ingest deletes shards only after committing,
    so a sample is seen in at least one of the two even while an ingest runs.
    """
    pending = pending_ids(root, run_key)
    return pending | store.finished_ids(run_key)


def ingest(store: Store, root: str | os.PathLike[str], warn=None) -> dict[str, int]:
    """Load all run.json files and shards under ``root`` into ``store``; delete loaded shards.

    One writer connection, one transaction; shard files are deleted only after the commit,
    so a crash leaves them for the next ingest, which re-applies them idempotently
    (primary keys + insert-or-replace). For a sample seen several times the last finished
    row wins, else the last errored one; an errored row never replaces a finished row
    already in the database. The timings of a sample come from the shard whose sample row
    was kept (stale stages of a replaced attempt are dropped). A malformed shard or run.json
    (bad JSON, an unknown column, a wrong type, a row without its key) is moved to
    ``root/.quarantine/`` and named in one line through ``warn``; the valid files beside it
    are loaded (``bad_files`` counts the quarantined ones).

    A run whose status is ``running`` while no process holds its liveness lock
    (``ShardWriter.alive``; a killed run) becomes ``interrupted``; one whose shards of the
    cell (``run --shard``) said ``incomplete`` becomes ``complete`` (``partial`` with errors)
    once all its ``n_samples`` are in.

    Returns counts: runs, shards, samples, timings, skipped (errored rows not applied
    because the sample is already finished), bad_files, interrupted. The database is opened for writing only
    when there is something to load or a run to mark (the check for stale runs reads it).
    """
    root = Path(root)
    counts = {"runs": 0, "shards": 0, "samples": 0, "timings": 0, "skipped": 0, "bad_files": 0, "interrupted": 0}
    if not root.is_dir():
        return counts

    def set_aside(path: Path, problem: str) -> None:
        counts["bad_files"] += 1
        try:
            moved = quarantine(root, path)
        except OSError:  # vanished meanwhile (another ingest): nothing to set aside
            return
        if warn:
            warn(f"malformed results file set aside: {problem} -> {moved}")

    run_rows: list[dict[str, Any]] = []
    run_texts: list[tuple[Path, str]] = []
    files: list[tuple[str, Path]] = []  # (run_key, shard), in load order
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name != QUARANTINE):
        run_key = folder.name
        try:
            run_text = (folder / RUN_FILE).read_text(encoding="utf-8")
        except OSError:
            run_text = None
        if run_text is not None and _marker_text(folder) != run_text:
            try:
                run = json.loads(run_text)
            except ValueError:
                run = None
            problem = _check_run(run)
            if problem is None:
                run["run_key"] = run_key
                for old, new in RENAMED.items():  # a run.json written before the columns were renamed
                    if old in run:
                        run.setdefault(new, run.pop(old))
                run_rows.append({k: v for k, v in run.items() if k in RUN_COLUMNS})
                run_texts.append((folder, run_text))
            else:
                set_aside(folder / RUN_FILE, f"{folder / RUN_FILE}: {problem}")
        files += [(run_key, path) for path in shard_files(folder)]
    # DuckDB parses and checks every line at once; a file it cannot vouch for (bad JSON, an
    # unknown column, a wrong type, a sample twice in one file) sends all of them through
    # the line-by-line reader, which names the bad file and sets it aside.
    parsed = _parse_fast(files) or _parse_slow(files, set_aside)
    samples, timings, loaded = parsed

    stale = _stale_running(store, root)
    if not run_rows and not loaded and not stale:
        return counts

    with store.writer() as con:
        con.begin()
        try:
            for run in run_rows:
                store.upsert_run(con, run)
            con.register("_shard_samples", samples)
            con.register("_shard_timings", timings)
            try:
                counts.update(_merge(con))
            finally:
                con.unregister("_shard_samples")
                con.unregister("_shard_timings")
            # A cell computed in shards is complete when its last sample is in, whichever shard wrote it.
            con.execute("""
                UPDATE runs SET status = CASE WHEN EXISTS (SELECT 1 FROM samples AS s WHERE s.run_key = runs.run_key
                                                           AND s.error IS NOT NULL) THEN 'partial' ELSE 'complete' END
                WHERE status = 'incomplete' AND n_samples <= (SELECT count(*) FROM samples AS s
                                                             WHERE s.run_key = runs.run_key)""")
            dead = [k for k in stale | {r["run_key"] for r in run_rows if r.get("status") == "running"}
                    if not is_alive(root / k)]
            if dead:
                con.execute("UPDATE runs SET status = 'interrupted' WHERE status = 'running' "
                            "AND list_contains(?, run_key)", [dead])
            counts["interrupted"] = len(dead)
            con.commit()
        except BaseException:
            with contextlib.suppress(Exception):  # a failed commit (full disk) has ended it itself
                con.rollback()
            raise
    counts["runs"] = len(run_rows)
    for folder, text in run_texts:
        write_text(folder / RUN_MARKER, text)
    for path in loaded:
        path.unlink(missing_ok=True)
    counts["shards"] = len(loaded)
    if loaded:
        fsync_dir(root)
    return counts


# What a shard's rows become before they are merged: one Arrow table per kind, each row with
# ``ord`` (the shard's place in load order) and ``line`` (its place in the shard).
_SAMPLE_ROWS = pa.schema([*SAMPLE_SCHEMA, ("ord", pa.int64()), ("line", pa.int64())])
_TIMING_ROWS = pa.schema([*TIMING_SCHEMA, ("ord", pa.int64()), ("line", pa.int64())])


def _parse_slow(files: list[tuple[str, Path]], set_aside) -> tuple[pa.Table, pa.Table, list[Path]]:
    """Read shards line by line in Python; a malformed one is set aside and the rest kept."""
    samples: list[dict[str, Any]] = []
    timings: list[dict[str, Any]] = []
    loaded: list[Path] = []
    for order, (run_key, path) in enumerate(files):
        try:
            rows = read_shard(path)
        except FileNotFoundError:  # ingested by another process meanwhile
            continue
        except (OSError, ValueError) as exc:
            set_aside(path, str(exc))
            continue
        loaded.append(path)
        for line, row in enumerate(rows):
            table = row.pop("table")
            row.update(run_key=run_key, sample_id=str(row["sample_id"]), ord=order, line=line)
            if table == "samples":
                row["metrics"] = to_json(row.get("metrics"))
                row["created_at"] = to_timestamp(row.get("created_at"))
                samples.append(row)
            else:
                row["ms"] = float(row["ms"])
                timings.append(row)
    return (pa.Table.from_pylist(samples, schema=_SAMPLE_ROWS), pa.Table.from_pylist(timings, schema=_TIMING_ROWS),
            loaded)


def _json_types(field: str, kinds: str) -> str:
    return f"coalesce(json_type(j, '$.{field}') IN ({kinds}, 'NULL'), true)"


_TEXT, _INT = "'VARCHAR'", "'BIGINT', 'UBIGINT'"
_NUMBER = f"{_INT}, 'DOUBLE'"
# The checks of ``_check_row`` in SQL: a JSON object of one table's known columns, the right
# JSON type for each value (None allowed), the keys present; naive ISO timestamps only.
_VALID_SQL = f"""
    json_type(j) = 'OBJECT' AND (
      (j->>'$.table' = 'samples'
       AND list_has_all({list(('table', *SAMPLE_COLUMNS))}, json_keys(j))
       AND json_type(j, '$.sample_id') IN ({_TEXT}, {_INT})
       AND {_json_types('run_key', _TEXT)} AND {_json_types('success', "'BOOLEAN'")}
       AND {_json_types('score', _NUMBER)} AND {_json_types('steps', _INT)}
       AND {_json_types('metrics', "'OBJECT'")} AND {_json_types('error', _TEXT)}
       AND {_json_types('created_at', _TEXT)}
       AND (j->>'$.created_at' IS NULL OR (try_cast(j->>'$.created_at' AS TIMESTAMP) IS NOT NULL
            AND NOT regexp_matches(j->>'$.created_at', '(Z|[+-][0-9][0-9]:?[0-9][0-9])$'))))
      OR
      (j->>'$.table' = 'timings'
       AND list_has_all({list(('table', *TIMING_COLUMNS))}, json_keys(j))
       AND json_type(j, '$.sample_id') IN ({_TEXT}, {_INT})
       AND json_type(j, '$.stage') = 'VARCHAR' AND json_type(j, '$.ms') IN ({_NUMBER})
       AND {_json_types('run_key', _TEXT)}))
"""


def _parse_fast(files: list[tuple[str, Path]]) -> tuple[pa.Table, pa.Table, list[Path]] | None:
    """Every shard parsed and checked by DuckDB in one pass; None when any line fails a check
    (or a file vanished, or one shard holds a sample twice): the caller then reads line by line."""
    import duckdb

    if not files:
        return None
    con = duckdb.connect()
    try:
        con.register("_files", pa.table({"filename": [str(p) for _, p in files],
                                         "run_key": [k for k, _ in files], "ord": list(range(len(files)))}))
        try:
            con.execute("CREATE TEMP TABLE lines AS SELECT f.run_key, f.ord, o.json AS j "
                        "FROM read_ndjson_objects(?, filename = true) AS o JOIN _files AS f USING (filename)",
                        [[str(p) for _, p in files]])
        except duckdb.Error:  # bad JSON, a vanished file: the slow path says which
            return None
        if con.execute(f"SELECT count(*) FROM lines WHERE NOT coalesce({_VALID_SQL}, false)").fetchall()[0][0]:
            return None
        samples = con.sql("""
            SELECT run_key, j->>'$.sample_id' AS sample_id, (j->>'$.success')::BOOLEAN AS success,
                   (j->>'$.score')::DOUBLE AS score, (j->>'$.steps')::INTEGER AS steps,
                   CAST(j->'$.metrics' AS VARCHAR) AS metrics, j->>'$.error' AS error,
                   (j->>'$.created_at')::TIMESTAMP AS created_at, ord, 0::BIGINT AS line
            FROM lines WHERE j->>'$.table' = 'samples'""").to_arrow_table()
        timings = con.sql("""
            SELECT run_key, j->>'$.sample_id' AS sample_id, j->>'$.stage' AS stage, (j->>'$.ms')::DOUBLE AS ms,
                   ord, 0::BIGINT AS line
            FROM lines WHERE j->>'$.table' = 'timings'""").to_arrow_table()
        twice = con.execute("""
            SELECT (SELECT count(*) FROM (SELECT 1 FROM samples GROUP BY run_key, sample_id, ord HAVING count(*) > 1))
                 + (SELECT count(*) FROM (SELECT 1 FROM timings GROUP BY run_key, sample_id, stage, ord
                                          HAVING count(*) > 1))""").fetchall()[0][0]
        if twice:
            return None  # which of two rows in one shard came last is known line by line only
    finally:
        con.close()
    return samples.cast(_SAMPLE_ROWS), timings.cast(_TIMING_ROWS), [p for _, p in files]


def _merge(con) -> dict[str, int]:
    """Apply ``_shard_samples`` / ``_shard_timings`` (registered on ``con``) to the database.

    For a sample seen several times the last finished row wins, else the last errored one;
    an errored row never replaces a finished row already stored (``skipped``). A sample's
    timings come from the shard whose sample row was kept (earlier stages of the sample
    are deleted); timings without a sample row in this batch are loaded as they are."""
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _best AS
        SELECT * FROM _shard_samples
        QUALIFY row_number() OVER (PARTITION BY run_key, sample_id
                                   ORDER BY error IS NULL DESC, ord DESC, line DESC) = 1""")
    skipped = con.execute("""
        DELETE FROM _best AS b WHERE b.error IS NOT NULL AND EXISTS (
            SELECT 1 FROM samples AS s WHERE s.run_key = b.run_key AND s.sample_id = b.sample_id
            AND s.error IS NULL)""").fetchone()[0]
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _kept_timings AS
        SELECT t.run_key, t.sample_id, t.stage, t.ms FROM _shard_timings AS t
        LEFT JOIN _best AS b USING (run_key, sample_id)
        WHERE (b.ord IS NOT NULL AND t.ord = b.ord)
           OR (b.ord IS NULL AND NOT EXISTS (SELECT 1 FROM _shard_samples AS s WHERE s.run_key = t.run_key
                                             AND s.sample_id = t.sample_id AND s.error IS NOT NULL))
        QUALIFY row_number() OVER (PARTITION BY t.run_key, t.sample_id, t.stage ORDER BY t.ord DESC, t.line DESC) = 1
    """)
    con.execute("DELETE FROM timings AS t USING _best AS b WHERE t.run_key = b.run_key AND t.sample_id = b.sample_id")
    n_samples = con.execute(
        "INSERT OR REPLACE INTO samples BY NAME "
        "SELECT run_key, sample_id, success, score, steps, metrics, error, "
        "coalesce(created_at, now()::TIMESTAMP) AS created_at FROM _best").fetchone()[0]
    n_timings = con.execute("INSERT OR REPLACE INTO timings BY NAME SELECT * FROM _kept_timings").fetchone()[0]
    con.execute("DROP TABLE _best")
    con.execute("DROP TABLE _kept_timings")
    return {"samples": int(n_samples), "timings": int(n_timings), "skipped": int(skipped)}


def prune_runs(store: Store, shard_root: Path, run_keys: list[str]) -> int:
    """Delete these runs with their samples, timings and pending shards; how many runs the
    database held."""
    import shutil

    from interlat_bench.results.store import prune

    gone = prune(store, run_keys)
    for key in run_keys:
        shutil.rmtree(Path(shard_root) / key, ignore_errors=True)
    return gone
