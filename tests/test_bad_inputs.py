"""A corpus of bad inputs, as a user types them: each must end in a non-zero exit, a line that
names what was wrong, and an unchanged results database."""

import hashlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from interlat_bench.harness.cli import app
from interlat_bench.harness.entry import INTERRUPTED

TINY = ["--receiver", "tiny-llama", "--sender", "tiny-llama", "--no-leaderboard"]

# (command line, extra environment, what the message must name)
CORPUS = [
    (["run", "-m", "nosuch", "-t", "math", *TINY], {}, "unknown method 'nosuch'"),
    (["run", "-m", "latnet", "-t", "math", *TINY], {}, "latent"),  # did-you-mean lists it
    (["run", "-m", "latent", "-t", "nosuch", *TINY], {}, "unknown benchmark 'nosuch'"),
    (["run", "-m", "", "-t", "math", *TINY], {}, "--methods"),
    (["run", "-m", "latent", "-t", "math", "--limit", "-5", *TINY], {}, "--limit -5"),
    (["run", "-m", "latent", "-t", "math", "--limit", "0", *TINY], {}, "--limit"),
    (["run", "-m", "latent", "-t", "math", "--limit", "abc", *TINY], {}, "--limit"),
    (["run", "-m", "latent", "-t", "math", "--seeds", "x", *TINY], {}, "--seeds 'x'"),
    (["run", "-m", "no_comm_zeroshot", "-t", "math", "--limit", "1", "--seeds", "", *TINY], {}, "--seeds ''"),
    (["run", "-m", "no_comm_zeroshot", "-t", "math", "--limit", "1", "--seeds", ",", *TINY], {}, "--seeds ','"),
    (["run", "-m", "latent", "-t", "math", "--splits", "nosplit", *TINY], {}, "split 'nosplit'"),
    (["run", "-m", "latent", "-t", "math", "--param", "plan_tokens=0", *TINY], {}, "plan_tokens=0"),
    (["run", "-m", "latent", "-t", "math", "--param", "n_train=abc", *TINY], {}, "n_train='abc'"),
    (["run", "-m", "latent", "-t", "math", "--param", "nosuch=1", *TINY], {}, "--param nosuch"),
    (["run", "-m", "latent", "-t", "math", "--param", "preset=quik", *TINY], {}, "preset='quik'"),
    (["run", "-m", "latent", "-t", "math", "--param", "curriculum=bogus", *TINY], {}, "curriculum='bogus'"),
    (["run", "-m", "latent", "-t", "math", "--param", "plan_tokens", *TINY], {}, "plan_tokens"),
    (["run", "-m", "latent", "-t", "math", "--setting", "max_steps=3", *TINY], {}, "--setting max_steps"),
    (["run", "-m", "latent", "-t", "alfworld", "--setting", "max_steps=0", *TINY], {}, "max_steps=0"),
    (["run", "-m", "latent", "-t", "alfworld", "--setting", "action=jump", *TINY], {}, "action='jump'"),
    (["run", "-m", "latent", "-t", "probe", "--setting", "n_options=1", *TINY], {}, "n_options=1"),
    (["run", "-m", "latent", "-t", "math", "--dtype", "float8", *TINY], {}, "--dtype 'float8'"),
    (["run", "-m", "latent", "-t", "math", "--max-new-tokens", "0", *TINY], {}, "--max-new-tokens"),
    (["run", "-m", "text_zeroshot", "-t", "math", "--receiver", "no-such-model", "--no-leaderboard"], {},
     "unknown model 'no-such-model'"),
    (["run", "-m", "text_zeroshot", "-t", "math", "--receiver", "someorg/not-cached-xyz", "--sender", "tiny-llama",
      "--no-leaderboard"], {"HF_HUB_OFFLINE": "1"}, "someorg/not-cached-xyz"),
    (["run", "-m", "text_zeroshot", "-t", "math", "--receiver", "{empty}", "--sender", "tiny-llama",
      "--no-leaderboard"], {}, "no config.json"),
    (["run", "-m", "text_zeroshot", "-t", "math", "--limit", "1", *TINY], {"MATH_DATA": "/nonexistent"},
     "MATH_DATA=/nonexistent"),
    (["run", "-m", "oracle", "-t", "alfworld", "--limit", "1", "--no-leaderboard"],
     {"ALFWORLD_DATA": "/nonexistent"}, "ALFWORLD_DATA=/nonexistent"),
    (["run", "-m", "text_zeroshot", "-t", "math", "--limit", "1", *TINY], {"MATH_DATA": "{math_empty}"},
     "math500_test.jsonl is missing"),
    (["run", "-m", "text_zeroshot", "-t", "math", "--limit", "1", *TINY], {"MATH_DATA": "{math_blank}"},
     "math500_test.jsonl: no problems in it"),
    (["run", "-m", "text_zeroshot", "-t", "math", "--limit", "1", *TINY], {"MATH_DATA": "{math_unanswered}"},
     "math500_test.jsonl:2: no reference answer"),
    (["leaderboard", "--metric", "drop table"], {}, "--metric 'drop table': no such metric"),
    (["leaderboard", "--format", "xml"], {}, "--format 'xml'"),
    (["leaderboard", "--by", "level; drop"], {}, "--by"),
    (["leaderboard", "--by", "nonexistent"], {}, "--by 'nonexistent': no such metrics key"),
    (["leaderboard", "--by", "levle"], {}, "did you mean 'level'?"),
    (["report", "--out", "{file}"], {}, "--out {file}: a file stands there"),
    (["leaderboard", "--db", "{garbage}"], {}, "not a valid DuckDB database"),
    (["report", "--db", "{missing}"], {}, "no results database"),
    (["leaderboard"], {"INTERLAT_RESULTS": "{file}"}, "INTERLAT_RESULTS={file}: a file stands where the results folder"),
    (["run", "-m", "no_comm_zeroshot", "-t", "math", "--limit", "1", *TINY], {"INTERLAT_RESULTS": "{file}"},
     "INTERLAT_RESULTS={file}: a file stands where the results folder"),
    (["sql", "drop table runs"], {}, "DROP"),
    (["sql", "select * from nosuch"], {}, "nosuch"),
    (["sql", "call enable_logging('x')"], {}, "sql"),
    (["run", "-m", "text_zeroshot", "-t", "math", "--limit", "1", *TINY], {"MATH_DATA": "{math_binary}"},
     "math500_test.jsonl:2: not UTF-8 text (byte 0xff)"),
    (["run", "--grid", "{binary_grid}", "--dry-run", *TINY], {}, "binary.yaml: not UTF-8 text"),
    (["run", "-m", "no_comm_zeroshot", "-t", "math", "--seeds", "0,1,0", *TINY], {}, "seed 0 is given twice"),
    (["run", "-m", "latent", "-t", "math", "--method-path", "{noclass_x}", *TINY], {}, "noclass.py:x:"),
    (["run", "-m", "latentmas", "-t", "probe", "--sender", "tiny-llama", "--receiver", "tiny-qwen", "--no-leaderboard"],
     {}, "sender and receiver must be one model"),
    (["run", "-m", "kv_share", "-t", "probe", "--param", "layers=middle:2", *TINY], {}, "layers='middle:2'"),
    (["run", "-m", "activation", "-t", "probe", "--param", "control=randomrot", *TINY], {}, "control='randomrot'"),
    (["report", "--out", "{under_file}"], {}, "a folder and a file in each other's place"),
    (["report", "--baseline", "nosuch"], {}, "--baseline 'nosuch': no such method"),
    (["sql", "select 1", "-o", "{dir}", "-f", "csv"], {}, "a folder stands there"),
    (["runs", "--status", "bogus"], {}, "--status 'bogus': expected one of running"),
    (["runs", "--prune", "--status", "bogus"], {}, "--status 'bogus'"),
    (["leaderboard", "-k", "zzzz"], {}, "--run-key 'zzzz': no run's key starts so"),
    (["ingest", "--db", "{dir}"], {}, "a folder stands where the results database file should be"),
    (["collect", "--task", "math", "--split", "nosplit", "--sender", "tiny-llama"], {}, "split 'nosplit'"),
    (["collect", "--task", "math", "--split", "test", "--limit", "0", "--sender", "tiny-llama"], {}, "--limit"),
]


def _snapshot(db) -> str:
    return hashlib.sha256(db.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A results database with one finished run, shared by the corpus."""
    import os

    root = tmp_path_factory.mktemp("bad")
    env = {"INTERLAT_RESULTS": str(root / "results"), "INTERLAT_CACHE": str(root / "cache")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        out = CliRunner().invoke(app, ["run", "-m", "text_zeroshot", "-t", "math", "--limit", "1",
                                       "--max-new-tokens", "4", *TINY])
        assert out.exit_code == 0, out.output
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    (root / "empty_model").mkdir()
    (root / "garbage.duckdb").write_text("not a database\n")
    (root / "a_file").write_text("someone's notes\n")
    (root / "math_empty").mkdir()
    (root / "math_blank").mkdir()
    (root / "math_blank" / "math500_test.jsonl").write_text("")
    (root / "math_binary").mkdir()
    (root / "math_binary" / "math500_test.jsonl").write_bytes(
        b'{"unique_id": "a", "problem": "1+1?", "solution": "x", "answer": "2"}\n'
        b'{"unique_id": "b", "problem": "1+1\xff?", "solution": "x", "answer": "2"}\n')
    (root / "binary.yaml").write_bytes(b'methods: [text_zeroshot]\ntasks: [math]\nnote: "\xff\xfe"\n')
    (root / "noclass.py").write_text("x = 1\n")
    (root / "a_dir").mkdir()
    (root / "math_unanswered").mkdir()
    (root / "math_unanswered" / "math500_test.jsonl").write_text(
        '{"unique_id": "a", "problem": "1+1?", "solution": "It is $\\\\boxed{2}$."}\n'
        '{"unique_id": "b", "problem": "2+2?", "solution": "Four."}\n')
    return root, env


@pytest.mark.parametrize("args,env,names", CORPUS, ids=[" ".join(c[0][:4]) + f" #{i}" for i, c in enumerate(CORPUS)])
def test_bad_input_fails_in_one_line_and_changes_nothing(recorded, monkeypatch, args, env, names):
    root, base_env = recorded
    fill = {"{empty}": str(root / "empty_model"), "{garbage}": str(root / "garbage.duckdb"),
            "{missing}": str(root / "missing.duckdb"), "{file}": str(root / "a_file"),
            "{binary_grid}": str(root / "binary.yaml"), "{noclass_x}": str(root / "noclass.py") + ":x",
            "{under_file}": str(root / "a_file" / "sub"), "{dir}": str(root / "a_dir"),
            **{f"{{{name}}}": str(root / name) for name in ("math_empty", "math_blank", "math_unanswered",
                                                           "math_binary")}}
    for k, v in {**base_env, **env}.items():
        monkeypatch.setenv(k, fill.get(v, v))
    db = root / "results" / "interlat.duckdb"
    before = _snapshot(db)
    result = CliRunner().invoke(app, [fill.get(a, a) for a in args])
    said = result.output + result.stderr
    assert result.exit_code not in (0, None), said
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), \
        f"traceback instead of a message: {result.exception!r}"
    assert names.replace("{file}", fill["{file}"]) in said, said
    assert _snapshot(db) == before  # nothing half-written
    assert not list((root / "results" / "shards").glob("*/*.jsonl"))


def _read_only(folder) -> list[str]:
    """A command prefix under which ``folder`` is a read-only mount (a private mount namespace
    of an unprivileged user namespace), so even root cannot write in it."""
    import shutil
    import subprocess

    prefix = ["unshare", "-rm", "sh", "-c", 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && '
              'exec "$@"', "sh", str(folder)]
    if not shutil.which("unshare") or subprocess.run([*prefix, "true"], capture_output=True).returncode:
        pytest.skip("no unprivileged mount namespace here (unshare -rm) to make a folder read-only")
    return prefix


@pytest.mark.parametrize("command", [["run", "-m", "no_comm_zeroshot", "-t", "math", *TINY], ["ingest"]])
def test_read_only_results_folder_is_refused_before_any_work(tmp_path, command):
    import os
    import subprocess
    import sys

    results = tmp_path / "results"
    (results / "shards" / "0123456789abcdef").mkdir(parents=True)  # a folder a run left
    before = sorted(p.name for p in results.iterdir())
    done = subprocess.run([*_read_only(results), sys.executable, "-m", "interlat_bench.harness.entry", *command,
                           "--db", str(results / "interlat.duckdb")],
                          capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "HOME": str(tmp_path)},
                          timeout=300)
    said = done.stdout + done.stderr
    assert done.returncode == 1, said
    assert f"results folder {results} is not writable (Read-only file system)" in said, said
    assert "Traceback" not in said and said.count("\n") <= 2, said
    assert sorted(p.name for p in results.iterdir()) == before


def _unreadable(folder) -> list[str]:
    """Make ``folder`` unreadable and return a command prefix under which that holds. Root reads
    anything, so as root the folder goes to an unmapped owner (nobody) and the command runs in
    an unprivileged user namespace (``unshare -r``), where root's override does not reach it."""
    import os
    import shutil
    import subprocess

    if os.geteuid() != 0:
        folder.chmod(0)
        return []
    if not shutil.which("unshare") or subprocess.run(["unshare", "-r", "true"], capture_output=True).returncode:
        pytest.skip("running as root without an unprivileged user namespace (unshare -r): root reads any folder")
    os.chown(folder, 65534, 65534)
    folder.chmod(0)
    return ["unshare", "-r"]


@pytest.mark.parametrize("command, said_expected", [
    (["run", "-m", "no_comm_zeroshot", "-t", "math", *TINY], "is not writable (Permission denied)"),
    (["ingest"], "is not writable (Permission denied)"),
    (["leaderboard"], "permission denied"),
])
def test_unreadable_results_folder_is_one_line_and_leaves_it_as_it_was(tmp_path, command, said_expected):
    import os
    import subprocess
    import sys

    results = tmp_path / "results"
    (results / "shards" / "0123456789abcdef").mkdir(parents=True)  # a folder a run left
    before = sorted(p.name for p in results.iterdir())
    prefix = _unreadable(results)
    try:
        done = subprocess.run([*prefix, sys.executable, "-m", "interlat_bench.harness.entry", *command,
                               "--db", str(results / "interlat.duckdb")],
                              capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "HOME": str(tmp_path)},
                              timeout=300)
    finally:
        results.chmod(0o755)
    said = done.stdout + done.stderr
    assert done.returncode == 1, said
    assert str(results) in said and said_expected in said, said
    assert "Traceback" not in said and said.count("\n") <= 2, said
    assert sorted(p.name for p in results.iterdir()) == before


def _copy_results(recorded, tmp_path, monkeypatch):
    """A private copy of the recorded results folder, the environment pointing at it."""
    import shutil

    root, env = recorded
    shutil.copytree(root / "results", tmp_path / "results")
    for k, v in {**env, "INTERLAT_RESULTS": str(tmp_path / "results")}.items():
        monkeypatch.setenv(k, v)
    return tmp_path / "results"


def test_a_run_record_with_a_bad_time_is_set_aside_once_and_the_commands_go_on(recorded, tmp_path, monkeypatch):
    results = _copy_results(recorded, tmp_path, monkeypatch)
    bad = results / "shards" / "0123456789abcdef" / "run.json"
    bad.parent.mkdir()
    bad.write_text('{"run_key": "0123456789abcdef", "status": "complete", "created_at": "yesterday"}\n')
    first = CliRunner().invoke(app, ["ingest"])
    assert first.exit_code == 0, first.output + first.stderr
    assert "runs.created_at is 'yesterday'" in first.stderr and "set aside" in first.stderr, first.stderr
    assert not bad.exists() and (results / "shards" / ".quarantine" / bad.parent.name / "run.json").exists()
    for command in (["runs"], ["ingest"], ["leaderboard"]):
        again = CliRunner().invoke(app, command)
        assert again.exit_code == 0, again.output + again.stderr
        assert "set aside" not in again.stderr
    # A second bad record under the same key is set aside beside the first, which is kept.
    bad.parent.mkdir(exist_ok=True)
    bad.write_text('{"run_key": "0123456789abcdef", "status": "complete", "created_at": "tomorrow"}\n')
    assert CliRunner().invoke(app, ["ingest"]).exit_code == 0
    kept = results / "shards" / ".quarantine" / bad.parent.name
    assert sorted(p.name for p in kept.iterdir()) == ["run.json", "run.json.1"]
    assert "yesterday" in (kept / "run.json").read_text() and "tomorrow" in (kept / "run.json.1").read_text()


def test_a_limit_beyond_the_split_says_so_in_one_line(recorded, tmp_path, monkeypatch):
    _copy_results(recorded, tmp_path, monkeypatch)
    math = tmp_path / "math"
    math.mkdir()
    (math / "math500_test.jsonl").write_text("".join(
        f'{{"unique_id": "p{i}", "problem": "{i}+{i}?", "solution": "x", "answer": "{2 * i}"}}\n' for i in range(2)))
    monkeypatch.setenv("MATH_DATA", str(math))
    result = CliRunner().invoke(app, ["run", "-m", "no_comm_zeroshot", "-t", "math", "--limit", "100000",
                                      "--max-new-tokens", "2", *TINY])
    assert result.exit_code == 0, result.output + result.stderr
    assert result.stderr.count("--limit 100000: math/math500 has 2 samples; running all of them") == 1, result.stderr


def _foreign_database(kind: str, path, recorded_db) -> str:
    """Write a database file that is not an intact results database; returns what the refusal names."""
    import sqlite3

    import duckdb

    if kind == "empty duckdb":
        duckdb.connect(str(path)).close()
        return "is not an interlat-bench results database (it holds no tables)"
    if kind == "someone's duckdb":
        con = duckdb.connect(str(path))
        con.execute("CREATE TABLE customers AS SELECT 1 AS id, 'Ada' AS name")
        con.close()
        return "is not an interlat-bench results database (its tables: customers)"
    if kind == "sqlite":
        con = sqlite3.connect(path)
        con.execute("CREATE TABLE customers (id INTEGER)")
        con.commit()
        con.close()
        return "is an SQLite file, not a DuckDB results database"
    data = recorded_db.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])
    return "is truncated"


READERS = [["leaderboard"], ["runs"], ["sql", "select 1"], ["show", "abc", "def"], ["report"],
           ["run", "-m", "no_comm_zeroshot", "-t", "math", "--limit", "1", *TINY]]


@pytest.mark.parametrize("kind", ["empty duckdb", "someone's duckdb", "sqlite", "truncated"])
def test_a_database_that_is_not_ours_or_not_whole_is_refused_by_name_and_left_as_it_was(recorded, tmp_path,
                                                                                     monkeypatch, kind):
    root, env = recorded
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    folder = tmp_path / "results"
    folder.mkdir()
    db = folder / "interlat.duckdb"
    names = _foreign_database(kind, db, root / "results" / "interlat.duckdb")
    before, listing = _snapshot(db), sorted(p.name for p in folder.iterdir())
    for command in READERS:
        result = CliRunner().invoke(app, [*command, "--db", str(db)])
        said = result.output + result.stderr
        assert result.exit_code == 1, f"{command}: {said}"
        assert isinstance(result.exception, SystemExit), f"{command}: traceback {result.exception!r}"
        assert f"{db} {names}" in result.stderr and result.stderr.count("\n") == 1, f"{command}: {said}"
        assert _snapshot(db) == before and sorted(p.name for p in folder.iterdir()) == listing, command


def test_readers_name_ingest_when_shards_wait_without_a_database(recorded, tmp_path, monkeypatch):
    results = _copy_results(recorded, tmp_path, monkeypatch)
    (results / "interlat.duckdb").unlink()
    (results / "shards" / "0123456789abcdef").mkdir()
    (results / "shards" / "0123456789abcdef" / "1-1-0.jsonl").write_text(
        '{"table": "samples", "sample_id": "s1", "success": true}\n')
    for command in (["runs"], ["leaderboard"], ["sql", "select 1"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 1, result.output + result.stderr
        assert "finished samples wait in" in result.stderr and "`interlat-bench ingest`" in result.stderr
        assert not (results / "interlat.duckdb").exists()


def _status(db) -> list:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT run_key, status FROM runs ORDER BY 1").fetchall()
    finally:
        con.close()


def _cli(prefix: list[str], args: list[str], env: dict, cwd, command: list[str] | None = None) -> tuple[int, str]:
    """The CLI (or ``command``) in a subprocess under a mount prefix; its exit status and all it said."""
    import os
    import subprocess
    import sys

    command = command or [sys.executable, "-m", "interlat_bench.harness.entry", *args]
    done = subprocess.run([*prefix, *command], capture_output=True,
                          text=True, cwd=cwd, env={**os.environ, **env, "HOME": str(cwd)}, timeout=300)
    return done.returncode, done.stdout + done.stderr


MORE = ["run", "-m", "text_zeroshot", "-t", "math", "--limit", "2", "--max-new-tokens", "4", *TINY]


def test_a_read_only_cache_is_refused_before_a_complete_run_is_touched(recorded, tmp_path, monkeypatch):
    import shutil

    results = _copy_results(recorded, tmp_path, monkeypatch)
    cache = tmp_path / "cache"
    shutil.copytree(recorded[0] / "cache", cache)
    db = results / "interlat.duckdb"
    before, statuses = _snapshot(db), _status(db)
    code, said = _cli(_read_only(cache), MORE, {"INTERLAT_CACHE": str(cache)}, tmp_path)
    assert code == 1, said
    assert f"cache folder {cache} is not writable (Read-only file system): choose another with $INTERLAT_CACHE" \
        in said and "Traceback" not in said and said.count("\n") == 1, said
    assert _snapshot(db) == before and _status(db) == statuses == [(statuses[0][0], "complete")]


def _full_disk(tmp_path, results) -> list[str]:
    """A command prefix under which ``results`` (a copy) lies on a full 4 MiB tmpfs mounted at
    ``tmp_path/full`` (a private mount namespace of an unprivileged user namespace)."""
    import shutil
    import subprocess

    mount = tmp_path / "full"
    mount.mkdir()
    script = ('mount -t tmpfs -o size=4m tmpfs "$1" && cp -a "$2" "$1/results" && '
              '{ dd if=/dev/zero of="$1/filler" bs=4k 2>/dev/null; true; } && shift 2 && exec "$@"')
    prefix = ["unshare", "-rm", "sh", "-c", script, "sh", str(mount), str(results)]
    if not shutil.which("unshare") or subprocess.run([*prefix, "true"], capture_output=True).returncode:
        pytest.skip("no unprivileged mount namespace here (unshare -rm) to mount a small tmpfs")
    return prefix


def _assert_full_disk_is_one_line_and_intact(tmp_path, results, command: list[str]) -> None:
    """``command`` on a full disk holding a copy of ``results``: one error line, exit 1, and the
    database's digest as before. The mount lives as long as the command, so the same shell then
    prints the digest."""
    import sys

    db = tmp_path / "full" / "results" / "interlat.duckdb"
    then_digest = ["sh", "-c", '"$0" -m interlat_bench.harness.entry "$@"; echo "exit $?"; sha256sum "$DB"',
                   sys.executable, *command, "--db", str(db)]
    code, said = _cli(_full_disk(tmp_path, results), [], {"DB": str(db)}, tmp_path, then_digest)
    assert f"exit 1\n{_snapshot(results / 'interlat.duckdb')}" in said, said
    assert "No space left on device" in said and "what was stored before is intact" in said, said
    assert "Traceback" not in said and said.count("error") == 1, said


def test_a_full_disk_is_one_line_and_the_database_stays_intact(recorded, tmp_path, monkeypatch):
    _assert_full_disk_is_one_line_and_intact(tmp_path, _copy_results(recorded, tmp_path, monkeypatch), MORE)


@pytest.mark.parametrize("command", [["ingest"], ["runs"]])
def test_ingesting_onto_a_full_disk_is_one_line_and_the_database_stays_intact(recorded, tmp_path, monkeypatch,
                                                                               command):
    """Pending shards too big for what is left: the commit fails; `runs` ingests first, too."""
    import json

    results = _copy_results(recorded, tmp_path, monkeypatch)
    key = _status(results / "interlat.duckdb")[0][0]
    row = {"table": "samples", "run_key": key, "success": False, "score": 0.0, "metrics": {"output": "y" * 100},
           "created_at": "2026-12-05T16:42:59"}
    (results / "shards" / key).mkdir(parents=True, exist_ok=True)
    (results / "shards" / key / "1-1-0.jsonl").write_text(
        "".join(json.dumps({**row, "sample_id": f"s{i}"}) + "\n" for i in range(3000)))
    _assert_full_disk_is_one_line_and_intact(tmp_path, results, command)


def test_ctrl_c_while_the_command_line_is_still_importing_is_one_line_and_exit_130(tmp_path):
    """The script's first act catches Ctrl-C: here it comes while Typer is being imported."""
    import subprocess
    import sys

    script = """if True:
        import importlib.abc, os, signal, sys

        class CtrlCOnTyper(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "typer":
                    os.kill(os.getpid(), signal.SIGINT)
                return None

        sys.meta_path.insert(0, CtrlCOnTyper())
        sys.argv = ["interlat-bench", "runs"]
        from interlat_bench.harness.entry import main
        main()
    """
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip() == INTERRUPTED and not done.stdout


def _press_ctrl_c():
    raise KeyboardInterrupt


def _interrupt_in_a_query():
    """What Ctrl-C does during a DuckDB query: the query ends in RuntimeError, not KeyboardInterrupt."""
    import os
    import signal
    import threading

    import duckdb

    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
    duckdb.connect().execute("SELECT count(*) FROM range(3000000000) t(i) WHERE i % 7 = 3").fetchall()  # seconds


@pytest.mark.parametrize("app_", [_press_ctrl_c, _interrupt_in_a_query],
                         ids=["KeyboardInterrupt", "DuckDB query interrupted"])
def test_ctrl_c_at_the_entry_point_is_one_line_and_exit_130(monkeypatch, capsys, app_):
    import signal

    from interlat_bench.harness import entry

    monkeypatch.setattr(entry, "INTERRUPT_GRACE_S", 1e9)  # its watchdog would end pytest itself
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit) as exit_:
            entry.main(app_)
    finally:
        signal.signal(signal.SIGINT, handler)
    said = capsys.readouterr()
    assert exit_.value.code == 130
    assert said.err.startswith("interrupted: ") and said.err.count("\n") == 1 and not said.out, said


_CLEAN_UP_HANGS = """
import sys, threading
from interlat_bench.harness import entry

def app():
    try:
        print("ready", flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        threading.Event().wait()  # a clean-up that never ends, as DuckDB's at times after an interrupt

entry.INTERRUPT_GRACE_S = 1.0
entry.main(app)
"""


def test_ctrl_c_ends_the_process_even_when_clean_up_hangs():
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", _CLEAN_UP_HANGS], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGINT)
        out, said = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, said
    assert said.startswith("interrupted: ") and said.count("\n") == 1 and "Traceback" not in said, said


def _catches_sigint(pid: int) -> bool:
    """Whether the process has a handler for SIGINT (bit 2 of SigCgt in /proc/PID/status, Linux)."""
    import signal

    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught >> (signal.SIGINT - 1) & 1)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc/PID/status (Linux)")
def test_ctrl_c_during_a_slow_command_is_one_line_and_exit_130(recorded, tmp_path, monkeypatch):
    import os
    import signal
    import subprocess
    import sys
    import time

    results = _copy_results(recorded, tmp_path, monkeypatch)
    before = _snapshot(results / "interlat.duckdb")
    # The child starts with SIGINT ignored, as a job started with `&` from a script does (CI runs so): a
    # signal sent before the entry point installs its handler would be lost and the query run on.
    proc = subprocess.Popen([sys.executable, "-m", "interlat_bench.harness.entry", "sql",
                             "SELECT count(*) FROM range(1000000000000) t(i) WHERE i % 7 = 3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        deadline = time.monotonic() + 120
        while not _catches_sigint(proc.pid):  # start-up (imports) takes seconds on a loaded machine
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate(timeout=5)
            time.sleep(0.2)
        time.sleep(3)  # into the query, which runs for many minutes
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        out, said = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, said
    assert said.startswith("interrupted: ") and said.count("\n") == 1 and "Traceback" not in said, said
    assert _snapshot(results / "interlat.duckdb") == before
