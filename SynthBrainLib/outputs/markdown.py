"""Markdown tables: the one writer of the tables the library and the developer tools put in docs and
reports (FreeSurfer's label table, benchmarks, evaluations)."""

from __future__ import annotations

from typing import Any, Iterable, Sequence


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A Markdown table as lines: the header, the ``|---|`` rule, then one line per row (cells shown
    with ``str``; format numbers before)."""
    return [_line(header), "|" + "---|" * len(header)] + [_line(row) for row in rows]


def _line(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"
