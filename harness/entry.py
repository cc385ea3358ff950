"""The `interlat-bench` script. Its first act is to catch Ctrl-C: importing the command line
(Typer, Rich) takes a moment, and Python's own handler would end a Ctrl-C in that moment with
a traceback. Then the command line runs under a handler that ends any Ctrl-C in one line."""

from __future__ import annotations

import os
import signal
import sys
import threading

INTERRUPTED = "interrupted: files are written whole or not at all; run the same command again to go on"
INTERRUPT_GRACE_S = 10.0  # what clean-up may take after Ctrl-C before the process ends regardless


def _before_the_command_line(signum, frame) -> None:
    sys.stderr.write(INTERRUPTED + "\n")
    sys.stderr.flush()
    raise SystemExit(130)  # nothing has started that needs to end


def main(app=None) -> None:
    """Run the command line (``app``: another callable, for tests). Ctrl-C anywhere ends in one
    line and exit status 130. The signal itself is noted: DuckDB turns it into
    RuntimeError('Query interrupted'), and Typer into a silent exit. Clean-up after it is given
    INTERRUPT_GRACE_S: DuckDB at times waits for its worker threads for ever once a query is
    interrupted (duckdb 2.0.1, about one time in five on `range(10**12)`), and nothing it holds
    needs it (files are written whole or not at all, ingest is one transaction)."""
    signal.signal(signal.SIGINT, _before_the_command_line)
    if app is None:
        from interlat_bench.harness.cli import app
    interrupted = []
    said = threading.Lock()  # the line is printed once, by whichever path gets there first

    def say_interrupted() -> None:
        if said.acquire(blocking=False):
            sys.stderr.write(INTERRUPTED + "\n")
            sys.stderr.flush()

    def end_regardless() -> None:
        say_interrupted()
        os._exit(130)

    def on_ctrl_c(signum, frame):
        if not interrupted:
            watchdog = threading.Timer(INTERRUPT_GRACE_S, end_regardless)
            watchdog.daemon = True  # a prompt exit does not wait for it
            watchdog.start()
        interrupted.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        sys.exit(app())
    except BaseException as exc:
        if not interrupted and not isinstance(exc, KeyboardInterrupt):
            raise
    say_interrupted()
    sys.exit(130)


if __name__ == "__main__":  # python -m interlat_bench.harness.entry (where the script is not installed)
    main()
