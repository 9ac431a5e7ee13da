"""Printing rich tables: full width when piped, so `focuskit ... | less` or `> file` keeps every column.

Rich sizes its console to the terminal, and to 80 columns when stdout is not one, where wide tables wrap their
cells or lose columns. Piped, the console is made wide enough for any table (a table is only as wide as its cells).
Every command that prints a table also has `--json`.
"""

from __future__ import annotations

from typing import Any


def print_table(table: Any) -> None:
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console = Console(width=10_000, soft_wrap=False)
    console.print(table)


__all__ = ["print_table"]
