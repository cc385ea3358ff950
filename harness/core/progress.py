"""Progress of the long stages (the sender's collection, receiver training, evaluation).

A stage opens ``track(name, total)`` and calls ``advance(n, info=...)``; what the user sees
is chosen once, by the command line (``use``): bars on a terminal, a few plain lines in a
log, nothing under ``-q``. The library default writes plain lines to the
``interlat_bench.progress`` logger, so a notebook or script that configures logging sees them
and one that does not stays quiet.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Protocol

from interlat_bench.harness.core.settings import process_rank


class Stage(Protocol):
    def advance(self, n: int = 1, info: str = "") -> None: ...

    def close(self) -> None: ...


class Lines:
    """Plain lines: the start, about every tenth of the stage, and its end, each with the
    count, the rate and the time left at that rate."""

    def __init__(self, name: str, total: int, write: Callable[[str], None], every: int = 10) -> None:
        self.name, self.total, self.write = name, max(total, 0), write
        self.done, self.info, self.start = 0, "", time.monotonic()
        self.step = max(1, self.total // every)
        self.shown = -1
        self.write(f"{self.name}: 0/{self.total}")

    def line(self) -> str:
        spent = time.monotonic() - self.start
        rate = self.done / spent if spent > 0 else 0.0
        left = f", ~{(self.total - self.done) / rate:.0f} s left" if rate and self.done < self.total else ""
        info = f"  {self.info}" if self.info else ""
        return f"{self.name}: {self.done}/{self.total} ({rate:.2f}/s, {spent:.0f} s{left}){info}"

    def advance(self, n: int = 1, info: str = "") -> None:
        self.done += n
        self.info = info or self.info
        if self.done >= self.total or self.done // self.step != self.shown // self.step:
            self.shown = self.done
            self.write(self.line())

    def close(self) -> None:
        if self.shown != self.done:
            self.write(self.line())


class Silent:
    def advance(self, n: int = 1, info: str = "") -> None:
        pass

    def close(self) -> None:
        pass


_log = logging.getLogger("interlat_bench.progress")
_display: Callable[[str, int], Stage] = lambda name, total: Lines(name, total, _log.info)  # noqa: E731


def use(display: Callable[[str, int], Stage]) -> Callable[[str, int], Stage]:
    """Choose how stages are shown from now on: ``display(name, total)`` opens one. Returns
    the display used until now (to put it back)."""
    global _display
    before, _display = _display, display
    return before


@contextlib.contextmanager
def track(name: str, total: int) -> Iterator[Stage]:
    """A stage of ``total`` steps (nothing is shown for an empty one: all of it was cached)."""
    # Under torchrun the first process speaks for all (each would print the same line).
    shown = total > 0 and process_rank() == 0
    stage = _display(name, total) if shown else Silent()
    try:
        yield stage
    finally:
        stage.close()


def counter(stage: Stage) -> Callable[[int, int], None]:
    """Adapt a ``callback(done, total)`` that reports running totals to ``stage``."""
    seen = [0]

    def report(done: int, total: int) -> None:
        stage.advance(done - seen[0])
        seen[0] = done

    return report
