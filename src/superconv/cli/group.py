"""The ``superconv`` command group; each command registers itself on it from its own module."""

from __future__ import annotations

import click

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="superconv")
def cli() -> None:
    """Super-convergence in PyTorch: LR range test, one-cycle schedule, fast training."""
