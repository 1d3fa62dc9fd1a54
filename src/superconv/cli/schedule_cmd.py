"""``superconv schedule``: the one-cycle schedule you will get, before training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from superconv.cli.group import CONTEXT, cli
from superconv.cli.options import FiniteFloat, schedule_options, shape_kwargs
from superconv.errors import ConfigError


@cli.command(context_settings=CONTEXT)
@click.option("--max-lr", type=FiniteFloat(), required=True, help="Peak learning rate.")
@click.option("--total-steps", type=int, default=None, help="Optimizer updates in the run.")
@click.option("--epochs", type=int, default=None, help="With --batches: the run's length in epochs.")
@click.option("--batches", type=int, default=None, help="Batches per epoch.")
@click.option("--accumulation", type=int, default=1, show_default=True, help="Batches per optimizer update.")
@schedule_options
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("schedule.png"),
    show_default=True,
    help="Where to write the PNG.",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write every step's LR and momentum as JSON.",
)
def schedule(
    max_lr: float,
    total_steps: int | None,
    epochs: int | None,
    batches: int | None,
    accumulation: int,
    preset: str | None,
    plot_path: Path,
    json_path: Path | None,
    **opts: Any,
) -> None:
    """Show the one-cycle schedule you will get, before training: key steps and a PNG plot."""
    from superconv import plots
    from superconv.schedule.one_cycle import OneCycleSchedule
    from superconv.schedule.steps import total_steps as count_steps

    if total_steps is None and epochs is not None and batches is not None:
        total_steps = count_steps(epochs, batches, accumulation)
    if total_steps is None:
        raise ConfigError("Missing the run's length: pass --total-steps, or --epochs and --batches")
    sched = OneCycleSchedule.from_preset(
        preset or "torch", max_lr=max_lr, total_steps=total_steps, **shape_kwargs(None, **opts)
    )
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
    plots.plot_lr_momentum(
        sched.lrs(),
        sched.momentums(),
        plot_path,
        markers=sched.key_steps(),
        title=f"One-cycle schedule ({total_steps} updates)",
    )
    click.echo(f"plot: {plot_path}")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(
            json.dumps({"schedule": sched.to_dict(), "lr": sched.lrs(), "momentum": sched.momentums()}, indent=1)
        )
        click.echo(f"json: {json_path}")
