"""Entry point: one typer app; each command group lives in its own module and registers itself here.

User errors (`FocusError`) print one line, `focuskit: error: ...`, and exit with code 2. Anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer
from typer.core import TyperGroup

from focuskit.core.errors import FocusError


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


class _FocusGroup(TyperGroup):
    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        """Usage errors (unknown option, `--tau abc`, a missing `--query`) as one line and exit 2, not click's box."""
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except typer.Abort:
            typer.echo("focuskit: error: aborted", err=True)
            sys.exit(1)
        except typer.TyperException as exc:  # typer's (vendored) click errors: UsageError, BadParameter, ...
            code = int(getattr(exc, "exit_code", 2))
            format_message = getattr(exc, "format_message", None)
            message = _one_line(format_message() if callable(format_message) else str(exc))
            ctx = getattr(exc, "ctx", None)
            hint = f" (see: {ctx.command_path} --help)" if code == 2 and ctx is not None else ""
            typer.echo(f"focuskit: error: {message}{hint}", err=True)
            sys.exit(code)
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx: Any) -> Any:
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
    "focuskit.cli.recognition",
    "focuskit.cli.demo",
    "focuskit.cli.answers",
]

for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def main() -> None:
    app(prog_name="focuskit")


if __name__ == "__main__":
    main()
