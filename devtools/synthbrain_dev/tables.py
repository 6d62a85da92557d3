"""The one Markdown table writer of the developer tools' reports (benchmarks, the sampler study,
throughput, the evaluations)."""

from __future__ import annotations

from typing import Any, Iterable, Sequence


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A Markdown table as lines: the header, the ``|---|`` rule, then one line per row (cells shown
    with ``str``; format numbers before)."""
    return [_line(header), "|" + "---|" * len(header)] + [_line(row) for row in rows]


def _line(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def gigabytes(n_bytes: int | None) -> str:
    """A memory figure's cell: GB with two decimals, ``-`` for none."""
    return "-" if not n_bytes else f"{n_bytes / 1e9:.2f}"
