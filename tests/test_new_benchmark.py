"""A new benchmark is one file: this test writes one (a toy task, outside the package), and runs it
end to end through the command line (`ls`, `run` with a trained receiver and a sender, `report`,
`show`) with no other file of the project changed: the package tree is hashed before and after."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

from typer.testing import CliRunner

import interlat_bench.harness as harness_pkg
from interlat_bench.harness.cli import app

TOY = textwrap.dedent('''
    """Echo: the sender is told a secret word; the receiver must say it."""
    from interlat_bench.benchmarks.base import Benchmark, Record, Sample

    WORDS = ["apple", "river", "stone", "cloud", "maple", "tiger", "lemon", "piano"]
    ASK = "Say the secret word."


    class Echo(Benchmark):
        name = "echo"
        description = "say the word only the sender was told"
        splits = ("test",)
        default_splits = ("test",)
        planner_prompt = "Tell your partner the secret word. {task}"
        reply_tokens = 4
        defaults = {"n": 6}

        def _samples(self, prefix):
            return [Sample(f"{prefix}{i}", f"The secret word is {w}.", {"word": w})
                    for i, w in enumerate(WORDS[: int(self.params.get("n", 6))])]

        def data_files(self, split):
            return []  # generated: the settings in the run key fix the data

        def samples(self, split, limit=None):
            return self._samples("test/")[:limit]

        def train_samples(self, limit=None, detours=0):
            return [Sample(s.id, s.task, {**s.data, "conversation": [
                {"role": "user", "content": ASK}, {"role": "assistant", "content": s.data["word"]}]})
                for s in self._samples("train/")][:limit]

        def single_reply_prompt(self, sample):
            return ASK

        def play(self, sample, agent, message):
            agent.begin(ASK, message, sample)
            reply = agent.respond()
            said = sample.data["word"] in reply.lower()
            return Record(sample.id, success=said, score=float(said), metrics={"output": reply,
                          **agent.episode_metrics()}, timings_ms=agent.timings_ms())
''')


PACKAGES = ("harness", "methods", "benchmarks", "collectors", "trainers", "results")


def _tree_digest(root: Path) -> str:
    """The project's source files (and grid files), names and contents."""
    h = hashlib.sha256()
    for path in sorted(p for folder in (*PACKAGES, "grids") for p in (root / folder).rglob("*") if p.is_file()
                       and "__pycache__" not in p.parts):
        h.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return h.hexdigest()


def test_a_benchmark_from_one_file_runs_end_to_end(tmp_path, results_env):
    package = Path(harness_pkg.__file__).resolve().parents[1]  # the checkout's top folder
    before = _tree_digest(package)
    toy = tmp_path / "echo.py"
    toy.write_text(TOY)
    plugin = ["--benchmark-path", f"{toy}:Echo"]
    runner = CliRunner()

    listed = runner.invoke(app, ["ls", "echo", *plugin])
    assert listed.exit_code == 0, listed.output
    assert "say the word only the sender was told" in listed.output and "test (6)" in listed.output

    db = tmp_path / "results" / "interlat.duckdb"
    ran = runner.invoke(app, ["run", "-m", "text,no_comm", "-t", "echo", "--sender", "tiny-llama",
                              "--receiver", "tiny-llama", "-p", "plan_tokens=4", "--db", str(db), *plugin])
    assert ran.exit_code == 0, ran.output
    assert "2 runs, 12 samples computed, 0 errors" in ran.output

    sql = runner.invoke(app, ["sql", "select method, count(*) n from samples join runs using (run_key) "
                                     "where benchmark = 'echo' group by 1 order by 1", "-f", "csv", "--db", str(db)])
    assert sql.output.splitlines() == ["method,n", "no_comm,6", "text,6"]
    plans = runner.invoke(app, ["sql", "select count(*) from samples join runs using (run_key) where method = 'text' "
                                       "and metrics->>'message_bytes' is not null and (metrics->>'message_bytes')::int > 0",
                                "-f", "csv", "--db", str(db)])
    assert plans.output.splitlines()[1] == "6", plans.output  # the sender ran and its plans were shipped

    reported = runner.invoke(app, ["report", "--db", str(db), "--baseline", "text"])
    assert reported.exit_code == 0, reported.output
    assert "echo" in reported.output  # the default table of a benchmark without its own layout
    assert "| text |" in (db.parent / "report" / "report.md").read_text()

    assert _tree_digest(package) == before, "running a new benchmark changed a file of the project"
