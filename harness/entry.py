"""The `interlat-bench` script. Its first act is to catch Ctrl-C: importing the command line
(Typer, Rich) takes a moment, and Python's own handler would end a Ctrl-C in that moment with
a traceback. Then ``cli.main`` takes over with its own handler."""

from __future__ import annotations

import signal
import sys

INTERRUPTED = "interrupted: files are written whole or not at all; run the same command again to go on"


def _before_the_command_line(signum, frame) -> None:
    sys.stderr.write(INTERRUPTED + "\n")
    sys.stderr.flush()
    raise SystemExit(130)  # nothing has started that needs to end


def main() -> None:
    signal.signal(signal.SIGINT, _before_the_command_line)
    from interlat_bench.harness.cli import main as command_line

    command_line()
