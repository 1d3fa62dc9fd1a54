"""``superconv``'s entry point: runs the command group and turns bad input into one line and exit status 2."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import click

import superconv.cli.compare_cmd
import superconv.cli.find_lr_cmd
import superconv.cli.schedule_cmd
import superconv.cli.train_cmd  # noqa: F401
import superconv.distributed as distributed
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


def process_started() -> float:
    """When this process started, on the ``time.monotonic()`` clock (a time budget counts Python's start-up too).

    Linux tells it (``/proc/self/stat`` against ``/proc/uptime``); elsewhere it is now, a few hundred ms later.
    """
    now = time.monotonic()
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        age = uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return now
    return now - age if 0 <= age < 60 else now


def one_line(exc: BaseException) -> str:
    """An error's message on one line (a message that lists several things may span lines)."""
    return " ".join(str(exc).split())


def lost_peer_message(exc: BaseException) -> str:
    """What a process says when another process of its run died or stopped answering."""
    first = one_line(exc)[:200]
    rank, world = distributed.launched_rank()
    return (
        f"process {rank} of {world}: another process of this run stopped "
        f"answering (it died, was killed, or hangs), so this one stops too ({type(exc).__name__}: {first}). "
        "Continue from the last checkpoint with `superconv train --resume DIR`"
    )


def _terminate(signum: int, frame: Any) -> None:
    # One stop is enough: a second SIGTERM must not cut short the clean ending the first one started.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning bad input into one line and exit status 2."""
    started = process_started()
    warnings.showwarning = _show_warning
    # SIGTERM outside the training loop (start-up, data, range test) ends the run as Ctrl-C does: cleanly, with
    # everything restored and status 130; inside the loop, fit saves a checkpoint first.
    with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
        signal.signal(signal.SIGTERM, _terminate)
    try:
        _run(argv, started)
    except KeyboardInterrupt:  # a signal that landed while the command was already ending: end as a stop does
        click.echo("superconv: aborted", err=True)
        sys.exit(130)
    finally:
        if argv is None:  # the process ends now (called in-process with argv, leave the caller's signals alone)
            _ignore_signals_while_exiting()


def _ignore_signals_while_exiting() -> None:
    # The work is saved by now. Python resets its signal handlers to the default while it shuts down, so a
    # SIGTERM/Ctrl-C landing in those last milliseconds would kill the process (status -15) instead of
    # ending it cleanly: ignore them from here on.
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run(argv: list[str] | None, started: float) -> None:
    try:
        obj = {"started": started, "argv": sys.argv[1:] if argv is None else list(argv)}
        cli.main(args=argv, prog_name="superconv", standalone_mode=False, obj=obj)
    except click.exceptions.Abort:
        click.echo("superconv: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        # Usage errors: click's own message, one line, status 2.
        click.echo(f"superconv: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except (ConfigError, CheckpointError) as exc:
        click.echo(f"superconv: error: {one_line(exc)}", err=True)
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except OSError as exc:
        # A file that cannot be written or read (permissions, full disk): say which, no traceback.
        click.echo(f"superconv: error: {exc}", err=True)
        sys.exit(1)
    except Exception as exc:  # a bug, not bad input: one line, and the traceback on request
        if distributed.lost_peer(exc):
            click.echo(f"superconv: error: {lost_peer_message(exc)}", err=True)
            if argv is None:
                # A process group whose peer died is left in an undefined state (torch.distributed's docs): its
                # threads can abort the interpreter's shutdown (std::terminate, status -6) after the work was
                # saved. This process ends here, so end it without the finalizers.
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(1)
            sys.exit(1)
        if os.environ.get("SUPERCONV_DEBUG"):
            raise
        click.echo(
            f"superconv: internal error: {type(exc).__name__}: {exc} (set SUPERCONV_DEBUG=1 for the traceback; "
            "please report it)",
            err=True,
        )
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
