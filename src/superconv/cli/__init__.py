"""The ``superconv`` command line, a thin layer over the library: one module per command, the shared options,
and ``main``, which turns bad input into one line and exit status 2."""

from superconv.cli.main import cli, main

__all__ = ["cli", "main"]
