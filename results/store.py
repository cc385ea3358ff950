"""The DuckDB results store.

DuckDB allows either one read-write process or any number of read-only processes on a
file, never both at once. In interlat-bench only the ingest step (``results.shards.ingest``)
opens the database read-write; workers append to shard files and everything else
(resume checks, leaderboards, ``interlat-bench sql``) reads.

Timestamps are stored as naive UTC ``TIMESTAMP`` values; ``spec``, ``versions`` and
``metrics`` are ``JSON`` columns (stored as JSON text).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from interlat_bench.harness.core.errors import UserError

SCHEMA_VERSION = 4

# Numbered migrations; each runs once, in its own transaction, recorded in schema_migrations.
# Never edit a released migration: append a new number and bump SCHEMA_VERSION.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """
        CREATE TABLE runs (
            run_key VARCHAR PRIMARY KEY,
            method VARCHAR,
            benchmark VARCHAR,
            split VARCHAR,
            sender VARCHAR,
            receiver VARCHAR,
            seed INTEGER,
            spec JSON,
            status VARCHAR,
            created_at TIMESTAMP,
            updated_at TIMESTAMP,
            git_sha VARCHAR,
            versions JSON,
            device VARCHAR
        )
        """,
        """
        CREATE TABLE samples (
            run_key VARCHAR,
            sample_id VARCHAR,
            success BOOLEAN,
            score DOUBLE,
            steps INTEGER,
            metrics JSON,
            error VARCHAR,
            created_at TIMESTAMP,
            PRIMARY KEY (run_key, sample_id)
        )
        """,
        """
        CREATE TABLE timings (
            run_key VARCHAR,
            sample_id VARCHAR,
            stage VARCHAR,
            ms DOUBLE,
            PRIMARY KEY (run_key, sample_id, stage)
        )
        """,
    ),
    # Tags a user gives runs (`run --tag`): not part of the run key, merged over attempts.
    2: ("ALTER TABLE runs ADD COLUMN tags VARCHAR[]",),
    # Runs on shape models (random weights, harness.core.shapes): their times count, their scores do not;
    # and how many samples the cell has, so that a cell computed in shards (`run --shard`) is
    # complete once every one of them is in.
    3: ("ALTER TABLE runs ADD COLUMN timing_only BOOLEAN", "ALTER TABLE runs ADD COLUMN n_samples INTEGER"),
    # The model references named as such ("receiver" also names the trained checkpoint, the agent
    # and a timing stage); the spec JSON keeps "sender" and "receiver", the run key's own names.
    4: ("ALTER TABLE runs RENAME COLUMN sender TO sender_model",
        "ALTER TABLE runs RENAME COLUMN receiver TO receiver_model"),
}
assert max(MIGRATIONS) == SCHEMA_VERSION

RUN_COLUMNS = (
    "run_key",
    "method",
    "benchmark",
    "split",
    "sender_model",
    "receiver_model",
    "seed",
    "spec",
    "status",
    "created_at",
    "updated_at",
    "git_sha",
    "versions",
    "device",
    "tags",
    "timing_only",
    "n_samples",
)
SAMPLE_COLUMNS = ("run_key", "sample_id", "success", "score", "steps", "metrics", "error", "created_at")
TIMING_COLUMNS = ("run_key", "sample_id", "stage", "ms")

# Arrow schemas give the bulk inserts exact types even when a column is all-null.
SAMPLE_SCHEMA = pa.schema(
    [
        ("run_key", pa.string()),
        ("sample_id", pa.string()),
        ("success", pa.bool_()),
        ("score", pa.float64()),
        ("steps", pa.int32()),
        ("metrics", pa.string()),
        ("error", pa.string()),
        ("created_at", pa.timestamp("us")),
    ]
)
TIMING_SCHEMA = pa.schema(
    [
        ("run_key", pa.string()),
        ("sample_id", pa.string()),
        ("stage", pa.string()),
        ("ms", pa.float64()),
    ]
)

_LOCK_RE = re.compile(r"Conflicting lock is held in (?P<program>.*?) \(PID (?P<pid>\d+)\)")


def utcnow() -> datetime:
    """Current time as a naive UTC datetime (what the TIMESTAMP columns hold)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def to_timestamp(value: Any) -> datetime | None:
    """Accept None, a datetime or an ISO-8601 string; return a naive UTC datetime."""
    if value is None or isinstance(value, datetime):
        ts = value
    elif isinstance(value, str):
        ts = datetime.fromisoformat(value)
    else:
        raise TypeError(f"not a timestamp: {value!r}")
    if ts is not None and ts.tzinfo is not None:
        ts = ts.astimezone(timezone.utc).replace(tzinfo=None)
    return ts


def _json_default(obj: Any) -> Any:
    item = getattr(obj, "item", None)  # numpy / torch scalars
    if callable(item):
        return item()
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):
        return tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def to_json(value: Any) -> str | None:
    """JSON text for a JSON column; strings are assumed to already be JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=_json_default)


def _lock_message(path: Path, exc: Exception, *, write: bool) -> str:
    text = str(exc)
    m = _LOCK_RE.search(text)
    holder = f"{m['program']} (PID {m['pid']})" if m else "another process"
    if write:
        advice = (
            "close that process and retry; pending shards are kept and "
            "`interlat-bench ingest` loads them later"
        )
    else:
        advice = "it is open read-write (an ingest?); wait for it to finish or close it, then retry"
    return f"results database {path} is locked by {holder}: {advice}"


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc)
    return "Conflicting lock" in text or "Could not set lock" in text


class Store:
    """A results database file. Connections are short-lived and opened per use.

    ``lock_wait`` (seconds) retries opening while another process holds the lock, saying so
    once through ``on_wait``; the default 0 fails at once with a UserError naming the holder.
    """

    def __init__(self, path: str | os.PathLike[str], *, lock_wait: float = 0.0, on_wait=None) -> None:
        self.path = Path(path)
        self.lock_wait = lock_wait
        self.on_wait = on_wait

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # -- connections ---------------------------------------------------------------------

    def _connect(self, *, read_only: bool, config: dict[str, Any] | None = None) -> duckdb.DuckDBPyConnection:
        """A connection to this file, which must be an intact results database of ours: every
        command opens it here, so a foreign or damaged file is refused before anything reads
        or writes it."""
        try:
            with open(self.path, "rb") as fh:
                head = fh.read(16)
        except FileNotFoundError:
            head = None  # the writer creates it
        except OSError as exc:
            raise UserError(f"cannot open results database {self.path}: {exc.strerror}") from None
        if head == b"SQLite format 3\0":  # DuckDB would try to download its SQLite extension
            raise UserError(f"{self.path} is an SQLite file, not a DuckDB results database: give another --db")
        con = self._open(read_only=read_only, config=config)
        try:
            self._check_file(con, fresh=head is None)
        except BaseException:
            con.close()
            raise
        return con

    def _check_file(self, con: duckdb.DuckDBPyConnection, *, fresh: bool) -> None:
        """Refuse a file cut short (DuckDB reads its missing blocks as zeros, or fails later at an
        ingest) and a DuckDB file without our schema (someone else's, or an empty one): readers
        never write, and the writer never adds our tables to another database."""
        # Used blocks only: DuckDB cuts free blocks off the end of the file, and blocks of a
        # write-ahead log not yet checkpointed are counted but not yet in the file.
        blocks, block_size = con.execute("SELECT used_blocks, block_size FROM pragma_database_size()").fetchone()
        size, expected = self.path.stat().st_size, 3 * 4096 + blocks * block_size  # 3 header blocks, then data
        if size < expected and not Path(f"{self.path}.wal").exists():
            raise UserError(f"results database {self.path} is truncated ({size} of {expected} bytes): restore it "
                            "or move it aside; pending shards stay for a later `interlat-bench ingest`")
        tables = [t for (t,) in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
            "AND table_catalog = current_database() ORDER BY 1").fetchall()]
        if "schema_migrations" not in tables and not fresh:
            held = f"its tables: {', '.join(tables[:5])}" if tables else "it holds no tables"
            raise UserError(f"{self.path} is not an interlat-bench results database ({held}): give another --db")

    def _open(self, *, read_only: bool, config: dict[str, Any] | None = None) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.lock_wait
        delay = 0.05
        said = False
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only, config=config or {})
            except duckdb.IOException as exc:
                if _is_lock_error(exc):
                    if time.monotonic() < deadline:
                        if not said and self.on_wait is not None:
                            m = _LOCK_RE.search(str(exc))
                            holder = f"{m['program']} (PID {m['pid']})" if m else "another process"
                            self.on_wait(f"results database {self.path} is in use by {holder}; "
                                         f"waiting up to {self.lock_wait:.0f} s")
                            said = True
                        time.sleep(delay)
                        delay = min(delay * 2, 1.0)
                        continue
                    raise UserError(_lock_message(self.path, exc, write=not read_only)) from exc
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise UserError(f"cannot open results database {self.path}: {first}") from exc

    @contextmanager
    def writer(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The read-write connection (only the ingest step uses this); applies migrations."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = self._connect(read_only=False)
        try:
            apply_migrations(con, db=self.path)
            yield con
        finally:
            con.close()

    @contextmanager
    def reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection. A missing file reads as an empty, fully migrated database."""
        if not self.path.exists():
            con = duckdb.connect(":memory:")
            try:
                apply_migrations(con, db=self.path)
                yield con
            finally:
                con.close()
            return
        con = self._connect(read_only=True)
        try:
            version = schema_version(con)
            if version > SCHEMA_VERSION:
                raise UserError(
                    f"results database {self.path} has schema v{version}, newer than this "
                    f"interlat-bench (v{SCHEMA_VERSION}); upgrade interlat-bench"
                )
            if version < SCHEMA_VERSION:  # an older database: migrate it once (additive), then read
                con.close()
                self.migrate()
                con = self._connect(read_only=True)
            yield con
        finally:
            con.close()

    def migrate(self) -> int:
        """Open read-write once to apply pending migrations; returns the schema version."""
        with self.writer() as con:
            return schema_version(con)

    # -- queries -------------------------------------------------------------------------

    def finished_ids(self, run_key: str) -> set[str]:
        """Sample ids of ``run_key`` already stored without an error (errored ones are retried)."""
        with self.reader() as con:
            rows = con.execute(
                "SELECT sample_id FROM samples WHERE run_key = ? AND error IS NULL", [run_key]
            ).fetchall()
        return {r[0] for r in rows}

    # -- writes (need a connection from writer()) ----------------------------------------

    @staticmethod
    def upsert_run(con: duckdb.DuckDBPyConnection, row: Mapping[str, Any]) -> None:
        """Insert or update one ``runs`` row.

        An existing row keeps its ``created_at`` and adds the new ``tags`` to its own; every
        other column takes the new value (the latest attempt's status, git sha, versions and
        device). ``updated_at`` defaults to now.
        """
        unknown = set(row) - set(RUN_COLUMNS)
        if unknown:
            raise ValueError(f"unknown runs columns: {sorted(unknown)}")
        if not row.get("run_key"):
            raise ValueError("runs row needs a run_key")
        now = utcnow()
        values = {c: row.get(c) for c in RUN_COLUMNS}
        values["spec"] = to_json(values["spec"])
        values["versions"] = to_json(values["versions"])
        values["created_at"] = to_timestamp(values["created_at"]) or now
        values["updated_at"] = to_timestamp(values["updated_at"]) or now
        values["seed"] = None if values["seed"] is None else int(values["seed"])
        values["tags"] = sorted(set(values["tags"] or [])) or None
        cols = ", ".join(RUN_COLUMNS)
        marks = ", ".join("?" for _ in RUN_COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in RUN_COLUMNS if c not in ("run_key", "created_at", "tags"))
        updates += (", tags = nullif(list_sort(list_distinct(list_concat(coalesce(runs.tags, []), "
                    "coalesce(excluded.tags, [])))), [])")
        con.execute(
            f"INSERT INTO runs ({cols}) VALUES ({marks}) ON CONFLICT (run_key) DO UPDATE SET {updates}",
            [values[c] for c in RUN_COLUMNS],
        )

    @staticmethod
    def insert_samples(con: duckdb.DuckDBPyConnection, rows: Iterable[Mapping[str, Any]]) -> int:
        """Bulk insert-or-replace ``samples`` rows; returns how many rows were written.

        Within ``rows`` the last row for a (run_key, sample_id) wins. A row carrying an
        error never replaces a stored row without one (a failed retry does not destroy a
        finished sample). Missing columns are written as NULL.
        """
        batch: dict[tuple[str, str], dict[str, Any]] = {}
        now = utcnow()
        for row in rows:
            unknown = set(row) - set(SAMPLE_COLUMNS)
            if unknown:
                raise ValueError(f"unknown samples columns: {sorted(unknown)}")
            rec = {c: row.get(c) for c in SAMPLE_COLUMNS}
            if rec["run_key"] is None or rec["sample_id"] is None:
                raise ValueError("samples rows need run_key and sample_id")
            rec["sample_id"] = str(rec["sample_id"])
            rec["metrics"] = to_json(rec["metrics"])
            rec["created_at"] = to_timestamp(rec["created_at"]) or now
            batch[(rec["run_key"], rec["sample_id"])] = rec
        if not batch:
            return 0
        table = pa.Table.from_pylist(list(batch.values()), schema=SAMPLE_SCHEMA)
        return _bulk(
            con,
            table,
            "INSERT OR REPLACE INTO samples BY NAME SELECT i.* FROM {src} AS i "
            "WHERE i.error IS NULL OR NOT EXISTS (SELECT 1 FROM samples AS s WHERE s.run_key = i.run_key "
            "AND s.sample_id = i.sample_id AND s.error IS NULL)",
        )

    @staticmethod
    def insert_timings(con: duckdb.DuckDBPyConnection, rows: Iterable[Mapping[str, Any]]) -> int:
        """Bulk insert-or-replace ``timings`` rows (last row per key wins); returns the count."""
        batch: dict[tuple[str, str, str], dict[str, Any]] = {}
        for row in rows:
            unknown = set(row) - set(TIMING_COLUMNS)
            if unknown:
                raise ValueError(f"unknown timings columns: {sorted(unknown)}")
            rec = {c: row.get(c) for c in TIMING_COLUMNS}
            if rec["run_key"] is None or rec["sample_id"] is None or rec["stage"] is None:
                raise ValueError("timings rows need run_key, sample_id and stage")
            rec["sample_id"] = str(rec["sample_id"])
            rec["ms"] = None if rec["ms"] is None else float(rec["ms"])
            batch[(rec["run_key"], rec["sample_id"], rec["stage"])] = rec
        if not batch:
            return 0
        table = pa.Table.from_pylist(list(batch.values()), schema=TIMING_SCHEMA)
        return _bulk(con, table, "INSERT OR REPLACE INTO timings BY NAME SELECT * FROM {src}")


def add_tags(store: Store, run_keys: Iterable[str], tags: Iterable[str]) -> int:
    """Add ``tags`` to these runs (those stored); returns how many runs were tagged."""
    keys, tags = sorted(set(run_keys)), sorted(set(tags))
    if not keys or not tags:
        return 0
    with store.writer() as con:
        return len(con.execute(
            "UPDATE runs SET tags = list_sort(list_distinct(list_concat(coalesce(tags, []), ?::VARCHAR[]))) "
            "WHERE list_contains(?, run_key) RETURNING 1", [tags, keys]).fetchall())


def prune(store: Store, run_keys: Iterable[str]) -> int:
    """Delete these runs with their samples and timings, in one transaction; returns how many
    runs were deleted."""
    keys = sorted(set(run_keys))
    if not keys:
        return 0
    with store.writer() as con:
        con.begin()
        try:
            found = con.execute("SELECT count(*) FROM runs WHERE list_contains(?, run_key)", [keys]).fetchone()[0]
            for table in ("timings", "samples", "runs"):
                con.execute(f"DELETE FROM {table} WHERE list_contains(?, run_key)", [keys])
            con.commit()
        except BaseException:
            con.rollback()
            raise
    return int(found)


def _bulk(con: duckdb.DuckDBPyConnection, table: pa.Table, sql: str) -> int:
    name = f"_incoming_{os.getpid()}_{time.monotonic_ns()}"
    con.register(name, table)
    try:
        result = con.execute(sql.format(src=name)).fetchone()
    finally:
        con.unregister(name)
    return int(result[0]) if result else 0


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    """The highest applied migration, 0 for a database without a migrations table."""
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_name = 'schema_migrations' AND table_schema = 'main' "
        "AND table_catalog = current_database()"
    ).fetchone()[0]
    if not exists:
        return 0
    return int(con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0])


def apply_migrations(con: duckdb.DuckDBPyConnection, *, db: Path | str = "database") -> list[int]:
    """Apply pending migrations, each in its own transaction; returns the versions applied."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMP)"
    )
    current = schema_version(con)
    if current > SCHEMA_VERSION:
        raise UserError(
            f"results database {db} has schema v{current}, newer than this interlat-bench "
            f"(v{SCHEMA_VERSION}); upgrade interlat-bench"
        )
    applied = []
    for version in sorted(v for v in MIGRATIONS if v > current):
        con.begin()
        try:
            for statement in MIGRATIONS[version]:
                con.execute(statement)
            con.execute("INSERT INTO schema_migrations VALUES (?, ?)", [version, utcnow()])
            con.commit()
        except BaseException:
            con.rollback()
            raise
        applied.append(version)
    return applied


# -- read-only SQL ---------------------------------------------------------------------------

# Statement kinds a read-only query may run. PIVOT parses as MULTI in DuckDB; CALL covers
# table functions such as pragma_table_info(). Everything else (INSERT, UPDATE, DELETE,
# CREATE, DROP, ALTER, ATTACH, DETACH, COPY, EXPORT, SET, INSTALL/LOAD, VACUUM, ...) is refused.
_READ_TYPES = {"SELECT", "EXPLAIN", "PRAGMA", "CALL", "MULTI"}


def query_readonly(path: str | os.PathLike[str], sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run ``sql`` on a read-only connection; returns (column names, rows) of the last statement.

    Mutating statements are refused before they run (UserError "read-only: ..."), the
    connection is opened with ``read_only=True`` and with external (file system) access
    disabled, so neither the database nor other files can be written.
    """
    db = Path(path)
    if not db.exists():
        raise UserError(f"no results database at {db} yet (run `interlat-bench run`, then `ingest`)")
    if not sql or not sql.strip():
        raise UserError("sql: empty statement")
    store = Store(db)
    con = store._connect(read_only=True, config={"enable_external_access": False})
    try:
        try:
            statements = con.extract_statements(sql)
        except duckdb.Error as exc:
            raise UserError(f"sql: {_first_line(exc)}") from exc
        if not statements:
            raise UserError("sql: empty statement")
        for st in statements:
            kind = st.type.name
            if kind not in _READ_TYPES:
                raise UserError(
                    f"read-only: {kind} statements are not allowed (`interlat-bench sql` only reads {db})"
                )
        columns: list[str] = []
        rows: list[tuple[Any, ...]] = []
        for st in statements:
            try:
                cur = con.execute(st.query)
                desc = cur.description
                columns = [d[0] for d in desc] if desc else []
                rows = cur.fetchall() if desc else []
            except (duckdb.InvalidInputException, duckdb.PermissionException) as exc:
                text = _first_line(exc)
                if "read-only" in text or "read_only" in text or "Permission" in text:
                    raise UserError(f"read-only: {text}") from exc
                raise UserError(f"sql: {text}") from exc
            except duckdb.Error as exc:
                raise UserError(f"sql: {_first_line(exc)}") from exc
        return columns, rows
    finally:
        con.close()


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
