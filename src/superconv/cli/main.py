"""``superconv``'s entry point: runs the command group and turns bad input into one line and exit status 2."""

from __future__ import annotations

import sys
import warnings
from typing import Any

import click

from superconv.cli import compare_cmd, find_lr_cmd, schedule_cmd, train_cmd  # noqa: F401  (they register commands)
from superconv.cli.group import cli
from superconv.errors import CheckpointError, ConfigError

__all__ = ["cli", "main"]


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    # Warnings are for the user here: one readable line, not a source location.
    click.echo(f"superconv: warning: {message}", err=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning bad input into one line and exit status 2."""
    warnings.showwarning = _show_warning
    try:
        cli.main(args=argv, prog_name="superconv", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("superconv: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        # Usage errors: click's own message, one line, status 2.
        click.echo(f"superconv: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except (ConfigError, CheckpointError) as exc:
        click.echo(f"superconv: error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except OSError as exc:
        # A file that cannot be written or read (permissions, full disk): say which, no traceback.
        click.echo(f"superconv: error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
