"""Entry point: one typer app; each command group lives in its own module and registers itself here.

User errors (`FocusError`) print one line, `focuskit: error: ...`, and exit with code 2. Anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import importlib
from typing import Any

import click
import typer
from typer.core import TyperGroup

from focuskit.core.errors import FocusError


class _FocusGroup(TyperGroup):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FocusError as exc:
            typer.echo(f"focuskit: error: {exc}", err=True)
            raise typer.Exit(2) from None


app = typer.Typer(
    cls=_FocusGroup,
    name="focuskit",
    help="Find one specific object in new images from a few boxed examples, and talk about it by name.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module defines `register(app)`. Listed here, imported eagerly (they import heavy libraries lazily).
COMMAND_MODULES = [
    "focuskit.cli.localize",
    "focuskit.cli.vlm",
    "focuskit.cli.data",
    "focuskit.cli.train",
    "focuskit.cli.library",
    "focuskit.cli.serve",
    "focuskit.cli.synth",
    "focuskit.cli.grpo",
    "focuskit.cli.explain",
    "focuskit.cli.concept",
    "focuskit.cli.personalize",
    "focuskit.cli.demo",
    "focuskit.cli.answers",
]

for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def main() -> None:
    app(prog_name="focuskit")


if __name__ == "__main__":
    main()
