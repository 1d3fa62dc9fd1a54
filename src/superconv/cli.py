"""The ``superconv`` command line: a thin layer over the library.

Bad input exits with status 2 and one line on stderr that says what to do.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from superconv.errors import CheckpointError, ConfigError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="superconv")
def cli() -> None:
    """Super-convergence in PyTorch: LR range test, one-cycle schedule, fast training."""


# --- superconv schedule -------------------------------------------------------------------------------
def schedule_options(f: Any) -> Any:
    """The one-cycle shape options, shared by `schedule`, `train` and `compare`."""
    options = [
        click.option("--preset", type=click.Choice(["torch", "smith", "fastai"]), default=None,
                     help="Named shape (default: superconv's training default, or torch's for `schedule`)."),
        click.option("--pct-start", type=float, default=None, help="Fraction of the run warming up."),
        click.option("--pct-down", type=float, default=None,
                     help="Three-phase: fraction going back down to the initial LR (rest: annihilation)."),
        click.option("--anneal", "anneal_strategy", type=click.Choice(["cos", "linear"]), default=None),
        click.option("--div-factor", type=float, default=None, help="initial_lr = max_lr / div_factor."),
        click.option("--final-div-factor", type=float, default=None, help="final_lr = initial_lr / this."),
        click.option("--three-phase/--two-phase", default=None, help="Smith's shape with the tail, or torch's."),
        click.option("--base-momentum", type=float, default=0.85, show_default=True),
        click.option("--max-momentum", type=float, default=0.95, show_default=True),
        click.option("--cycle-momentum/--no-cycle-momentum", default=True, show_default=True),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def shape_kwargs(preset: str | None, **opts: Any) -> dict[str, Any]:
    """Schedule keyword arguments: the preset's, overridden by whatever was given."""
    from superconv.schedules import preset_kwargs

    shape = preset_kwargs(preset) if preset else {}
    shape.update({k: v for k, v in opts.items() if v is not None})
    return shape


@cli.command(context_settings=CONTEXT)
@click.option("--max-lr", type=float, required=True, help="Peak learning rate.")
@click.option("--total-steps", type=int, default=None, help="Optimizer updates in the run.")
@click.option("--epochs", type=int, default=None, help="With --batches: the run's length in epochs.")
@click.option("--batches", type=int, default=None, help="Batches per epoch.")
@click.option("--accumulation", type=int, default=1, show_default=True, help="Batches per optimizer update.")
@schedule_options
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("schedule.png"), show_default=True, help="Where to write the PNG.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write every step's LR and momentum as JSON.")
def schedule(max_lr: float, total_steps: int | None, epochs: int | None, batches: int | None,
             accumulation: int, preset: str | None, plot_path: Path, json_path: Path | None,
             **opts: Any) -> None:
    """Show the one-cycle schedule you will get, before training: key steps and a PNG plot."""
    from superconv import plots
    from superconv.schedules import OneCycleSchedule
    from superconv.steps import total_steps as count_steps

    if total_steps is None and epochs is not None and batches is not None:
        total_steps = count_steps(epochs, batches, accumulation)
    if total_steps is None:
        raise ConfigError("Missing the run's length: pass --total-steps, or --epochs and --batches")
    sched = OneCycleSchedule(max_lr=max_lr, total_steps=total_steps, **shape_kwargs(preset or "torch", **opts))
    rows = []
    click.echo(f"{'step':>8}  {'point':<16} {'lr':>12}  {'momentum':>9}")
    for name, step in sched.key_steps():
        m = sched.momentum(step)
        rows.append((step, name, sched.lr(step), m))
        click.echo(f"{step:>8}  {name:<16} {sched.lr(step):>12.4e}  {'-' if m is None else f'{m:.4f}':>9}")
    click.echo(
        f"initial_lr={sched.initial_lr:.4g}  max_lr={sched.max_lr:.4g}  final_lr={sched.final_lr:.4g} "
        f"({sched.initial_lr / sched.final_lr:.0f}x below the initial LR)"
    )
    plots.plot_lr_momentum(sched.lrs(), sched.momentums(), plot_path, markers=sched.key_steps(),
                           title=f"One-cycle schedule ({total_steps} updates)")
    click.echo(f"plot: {plot_path}")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(
            {"schedule": sched.to_dict(), "lr": sched.lrs(), "momentum": sched.momentums()}, indent=1))
        click.echo(f"json: {json_path}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning bad input into one line and exit status 2."""
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


if __name__ == "__main__":  # pragma: no cover
    main()
