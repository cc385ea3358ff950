"""What the command line shows while it works, all on stderr (stdout keeps the tables):
progress bars on a terminal, a few plain progress lines elsewhere, notes, and with ``-v``
each sample's outcome and library warnings. ``--log-file`` gets everything, with times."""

from __future__ import annotations

import logging
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from interlat_bench.harness.core import progress

log = logging.getLogger("interlat_bench")
# Lines a progress bar already shows on the terminal: kept for the log file only.
_BAR_SHOWN = "bar_shown"


class _ToConsole(logging.Handler):
    def __init__(self, console: Console, level: int) -> None:
        super().__init__(level)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, _BAR_SHOWN, False):
            return
        style = "red" if record.levelno >= logging.WARNING else ("dim" if record.levelno < logging.INFO else "")
        self.console.print(Text(record.getMessage(), style=style), highlight=False)


class _Rate(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed:.2f}/s" if task.speed else "-/s", style="progress.data.speed")


class Bars:
    """Rich progress bars, one per open stage: count, rate, elapsed, time left and the
    stage's latest note (loss, solved so far). Each stage's last state also goes to the log."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(),
                                 TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
                                 TextColumn("{task.fields[info]}"), console=console)
        self.open = 0

    def __call__(self, name: str, total: int) -> progress.Stage:
        if not self.open:
            self.progress.start()
        self.open += 1
        return _Bar(self, self.progress.add_task(name, total=total, info=""), name, total)


class _Bar:
    def __init__(self, bars: Bars, task, name: str, total: int) -> None:
        self.bars, self.task = bars, task
        self.lines = progress.Lines(name, total, lambda line: log.info(line, extra={_BAR_SHOWN: True}))

    def advance(self, n: int = 1, info: str = "") -> None:
        self.bars.progress.update(self.task, advance=n, **({"info": info} if info else {}))
        self.lines.advance(n, info)

    def close(self) -> None:
        self.lines.close()
        self.bars.open -= 1
        if not self.bars.open:
            self.bars.progress.stop()


class _AtLeast(logging.Filter):
    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level


def _quiet_libraries(verbose: bool) -> None:
    """Library notices (DeepSpeed's accelerator line on every CPU run, transformers' advice on
    resized embeddings) are details: shown with -v only. DeepSpeed sets its logger's level and
    handler when it is imported, so it gets a filter; transformers reads its verbosity once."""
    import os
    import sys

    deepspeed = logging.getLogger("DeepSpeed")
    deepspeed.filters = [f for f in deepspeed.filters if not isinstance(f, _AtLeast)]
    deepspeed.addFilter(_AtLeast(logging.DEBUG if verbose else logging.ERROR))
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(logging.INFO if verbose else logging.ERROR)
    else:
        os.environ["TRANSFORMERS_VERBOSITY"] = "info" if verbose else "error"


def setup(console: Console, *, quiet: bool = False, verbose: bool = False, log_file: Path | None = None) -> None:
    """Route notes, progress and warnings: to ``console`` (stderr) at INFO (``-v``: DEBUG,
    ``-q``: warnings only), and everything to ``log_file``."""
    logging.captureWarnings(True)  # warnings.warn -> the py.warnings logger: -v and the log file
    loggers = (log, logging.getLogger("py.warnings"))
    for logger in loggers:
        logger.handlers.clear()
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    _quiet_libraries(verbose)
    log.addHandler(_ToConsole(console, level))
    logging.getLogger("py.warnings").addHandler(_ToConsole(console, logging.DEBUG if verbose else logging.ERROR))
    if log_file is not None:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(log_file, encoding="utf-8")
        except OSError as exc:
            from interlat_bench.harness.core.errors import UserError

            raise UserError(f"--log-file {log_file}: cannot write it ({exc.strerror})") from None
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        for logger in loggers:
            logger.addHandler(handler)
    if console.is_terminal and not quiet:
        progress.use(Bars(console))
    else:  # a log or a pipe: about ten lines per stage (the log file keeps them under -q)
        progress.use(lambda name, total: progress.Lines(name, total, log.info))


def run_progress() -> dict:
    """What `run` tells on stderr as it goes (``runner.run_grid``'s callbacks): each cell as it
    starts, and with ``-v`` each sample's outcome."""

    def on_start(spec, total, todo):
        log.info(f"{spec.label()}  key {spec.run_key}: {total - todo} done, {todo} to compute")

    def on_sample(record):
        log.debug(f"  {record.sample_id}: " + ("error" if record.error else ("ok" if record.success else "x")))

    return {"log": log.info, "on_start": on_start, "on_sample": on_sample}
