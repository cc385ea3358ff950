"""Where the command line meets the user: its two consoles (tables on stdout, the rest on
stderr) and the boundary that turns any fault a user can cause into one line and an exit code."""

from __future__ import annotations

import contextlib
import errno
import os
import sys

import typer
from rich.console import Console

from interlat_bench.harness.core.errors import UserError

# Off a terminal: wide enough for any cell, while rich sizes a table to its content.
WHOLE_CELLS_WIDTH = 10_000


def make_console(**kwargs) -> Console:
    """A terminal's tables fit its width. Off a terminal (a pipe, a file) there is no width to fit,
    so rich's default of 80 columns would cut cells to "conf…": there every cell is printed whole
    (COLUMNS, where set, still wins)."""
    screen = Console(soft_wrap=True, emoji=False, **kwargs)  # a path "x.py:x:" is text, not an emoji
    if not screen.is_terminal and not os.environ.get("COLUMNS"):
        screen.width = WHOLE_CELLS_WIDTH
    return screen


console = make_console()
err = make_console(stderr=True)


def echo(text: str) -> None:
    """Text that is a whole table already (Markdown, CSV, JSON): written as it is."""
    sys.stdout.write(text)
    sys.stdout.flush()


def _fail(message: str, code: int = 1):
    from rich.markup import escape

    err.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False)
    raise typer.Exit(code) from None


@contextlib.contextmanager
def user_errors():
    """Turn UserError into one line on stderr and a non-zero exit (2 for unknown names); so too
    permissions, a folder and a file in each other's place, and a full or read-only disk."""
    try:
        yield
    except UserError as e:
        _fail(str(e), e.exit_code)
    except PermissionError as e:  # a folder or file of someone else's, or read-only
        _fail(f"permission denied: {e.filename or e}")
    except (IsADirectoryError, NotADirectoryError) as e:
        _fail(f"{e.filename2 or e.filename}: {e.strerror.lower()} (a folder and a file in each other's place)")
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise
        _stored_intact(e.strerror, e.filename)
    except Exception as e:
        if not _disk_full(e):
            raise
        _stored_intact("No space left on device", None)


def _disk_full(exc: Exception) -> bool:
    """DuckDB reports a full disk as its own error (a failed write of the database or its WAL)."""
    return type(exc).__module__.split(".")[0] in ("duckdb", "_duckdb") and "No space left on device" in str(exc)


def _stored_intact(what: str, filename: str | None) -> None:
    # Files are written whole or not at all (harness.core.atomic) and ingest is one transaction.
    where = f" ({filename})" if filename else ""
    _fail(f"{what}{where}: what was stored before is intact; make room (or choose another folder) and run again")
