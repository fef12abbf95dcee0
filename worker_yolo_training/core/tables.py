"""Markdown tables, as the log, `evaluation.md` and the model version's page show them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from worker_yolo_training.core.files import printable


def escape(value: Any) -> str:
    """A value as a cell's text: a pipe would end the cell, a newline the row."""
    return printable(value).replace("|", "\\|")


def table_row(cells: Iterable[Any]) -> str:
    """`| a | b |`; an empty cell is one space wide (`| | b |`)."""
    return "|" + "|".join(f" {cell} " if str(cell) else " " for cell in cells) + "|"


def markdown_table(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    """A header, its rule and one line per row (cells as given: `escape` what may hold a pipe)."""
    lines = [table_row(header), "|---" * len(header) + "|"]
    return "\n".join(lines + [table_row(row) for row in rows])
