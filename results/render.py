"""Plain tables (a header and rows of text) as Markdown, CSV, JSON or a rich table: the one place
each format is written (the leaderboard's cells render through it too)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

FORMATS = ("rich", "md", "csv", "json")


def md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def markdown(header: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None,
             align: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured Markdown table (``align``: a ``---`` or ``---:`` per column), after
    the title in bold."""
    lines = [f"**{md_escape(title)}**", ""] if title else []
    lines.append("| " + " | ".join(md_escape(h) for h in header) + " |")
    lines.append("| " + " | ".join(align or ["---"] * len(header)) + " |")
    lines += ["| " + " | ".join(md_escape("" if c is None else c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *rows])
    return buf.getvalue()


def json_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A list of records, one per row."""
    return json.dumps([dict(zip(header, row, strict=True)) for row in rows], indent=1, default=str) + "\n"


def rich_table(header: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None):
    """Cells are text, not markup: ``latent[curriculum=pure]`` keeps its brackets."""
    from rich.table import Table
    from rich.text import Text

    table = Table(*header, title=title, title_justify="left")
    for row in rows:
        table.add_row(*(Text("NULL" if c is None else str(c)) for c in row))
    return table


def text(header: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str) -> str:
    """The table in a text format (md, csv or json)."""
    return {"md": markdown, "csv": csv_text, "json": json_text}[fmt](header, rows)
