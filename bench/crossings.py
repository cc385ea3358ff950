"""Count the package crossings from `interlat-bench run` to the first recorded sample.

Traces the calls of one real run (tiny random models, `--limit 1`, caches in a temporary
folder) until the first ``ShardWriter.add``. A crossing is a call from a function of one
package of the project into a function of another (harness, methods, trainers, collectors,
benchmarks, results), each caller -> callee pair counted once, in the order first made.
``harness.core`` is the base every layer may use (registry, settings, progress, atomic
files) and is left out of the count, as are calls back through an object a lower layer was
handed (an agent's ``respond`` called by the benchmark that plays it): those are listed apart.
A crossing is downward when the callee's package sits lower in the import contract. Printed:
the package edges crossed (what the import contract governs) and every function pair.

    python bench/crossings.py [--method latent] [--task probe]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

LAYERS = ["harness", "methods", "trainers", "collectors", "benchmarks", "results"]  # top to bottom


def package(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "interlat_bench" or len(parts) < 2:
        return None
    if parts[1] == "harness" and len(parts) > 2 and parts[2] == "core":
        return "core"
    return parts[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="latent")
    ap.add_argument("--task", default="probe")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    os.environ.setdefault("INTERLAT_CACHE", f"{tmp}/cache")
    from typer.testing import CliRunner

    from interlat_bench.harness.cli import app
    from interlat_bench.results.shards import ShardWriter

    seen: dict[tuple[str, str], tuple[str, str]] = {}
    upward: dict[tuple[str, str], tuple[str, str]] = {}
    first_add = ShardWriter.add.__code__

    class Done(Exception):
        pass

    def profile(frame, event, arg):
        if event != "call":
            return
        if frame.f_code is first_add:
            sys.setprofile(None)
            raise Done
        caller = frame.f_back
        if caller is None:
            return
        here, there = package(frame.f_globals.get("__name__", "")), package(caller.f_globals.get("__name__", ""))
        if not here or not there or here == there or "core" in (here, there):
            return
        pair = (f"{caller.f_globals['__name__']}.{caller.f_code.co_name}", f"{frame.f_globals['__name__']}.{frame.f_code.co_name}")
        down = LAYERS.index(here) > LAYERS.index(there)
        (seen if down else upward).setdefault(pair, (there, here))

    runner = CliRunner()
    sys.setprofile(profile)
    try:
        runner.invoke(app, ["run", "-m", args.method, "-t", args.task, "--sender", "tiny-llama", "--receiver",
                            "tiny-llama", "--limit", "1", "--db", f"{tmp}/results/interlat.duckdb", "-q",
                            "--no-leaderboard"], catch_exceptions=False)
    except Done:
        pass
    finally:
        sys.setprofile(None)
    edges = sorted({pkgs for pkgs in seen.values()}, key=lambda e: (LAYERS.index(e[0]), LAYERS.index(e[1])))
    print(f"`run -m {args.method} -t {args.task}` to the first record: {len(edges)} package edges, all downward: "
          + ", ".join(f"{a} -> {b}" for a, b in edges))
    modules = sorted({(c.rsplit(".", 1)[0], d.rsplit(".", 1)[0]) for c, d in seen})
    print(f"{len(modules)} caller module -> callee module pairs across packages")
    print(f"{len(seen)} caller -> callee function pairs across packages (each counted once):")
    for i, ((caller, callee), (a, b)) in enumerate(seen.items(), 1):
        print(f"{i:3d}. {a} -> {b}: {caller} -> {callee}")
    print(f"calls back through objects handed down (protocol calls, not imports): {len(upward)}")
    for (caller, callee), (a, b) in upward.items():
        print(f"     {a} -> {b}: {caller} -> {callee}")


if __name__ == "__main__":
    main()
