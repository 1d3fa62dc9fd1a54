"""``superconv compare``: one-cycle against tuned baselines on your data (the paper's experiment)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from superconv.cli.group import CONTEXT, cli
from superconv.cli.options import build, data_model_options, plain, prepare
from superconv.cli.rundir import claim_run_dir, default_out


@cli.command(context_settings=CONTEXT)
@data_model_options
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="One-cycle's budget in epochs.")
@click.option(
    "--budget-factor",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Baselines train this many times longer.",
)
@click.option(
    "--schedules",
    default="constant,step,cosine",
    show_default=True,
    help="Comma-separated baselines; add one-cycle-no-tail or fastai for one-cycle variants.",
)
@click.option(
    "--tune/--no-tune",
    default=True,
    show_default=True,
    help="Tune each baseline's LR on a log grid (without it the comparison proves nothing).",
)
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True, help="Repeat over this many seeds.")
@click.option(
    "--eval-every",
    type=click.IntRange(min=1),
    default=None,
    help="Optimizer updates between test evaluations (default: enough for one-cycle to get 20).",
)
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Output folder (default runs/compare-<time>)."
)
@click.option("--overwrite", is_flag=True, help="Replace the earlier results in --out.")
def compare(**opts: Any) -> None:
    """Show super-convergence on your data: one-cycle vs tuned constant, step-decay and cosine baselines."""
    from superconv.comparison.runner import compare as run_compare
    from superconv.files import write_json, write_text
    from superconv.train.recipes import auto_epochs

    schedules = [s.strip() for s in opts["schedules"].split(",") if s.strip()]
    out = claim_run_dir(opts["out"] or default_out("compare"), overwrite=opts["overwrite"], resume_hint=False)
    recipe, data, _, device = prepare(opts, epochs=opts["epochs"])
    if recipe.epochs is None:  # one-cycle's budget adapted to the data, as superconv train does
        recipe = replace(recipe, epochs=auto_epochs(len(data.train)))

    def make_model(seed: int) -> Any:
        return build(opts, recipe, data, seed=seed)

    click.echo(
        f"superconv compare: {data.name} ({data.train_size} training images), {recipe.model} width "
        f"{recipe.width}, {recipe.optimizer}; one-cycle {recipe.epochs} epochs vs {', '.join(schedules)} "
        f"for {recipe.epochs * opts['budget_factor']} epochs on {device}"
    )
    report = run_compare(
        make_model,
        data.train,
        data.val,
        data.test,
        epochs=recipe.epochs,
        budget_factor=opts["budget_factor"],
        schedules=schedules,
        optimizer=recipe.optimizer,
        seeds=list(range(opts["seed"], opts["seed"] + opts["seeds"])),
        tune=opts["tune"],
        eval_every=opts["eval_every"],
        fit_kwargs={
            "device": device,
            "precision": opts["precision"],
            "weight_decay": recipe.weight_decay,
            "label_smoothing": recipe.label_smoothing,
            "range_test_kwargs": {"num_iter": recipe.range_test_iters} if recipe.range_test_iters else {},
            "channels_last": "auto" if opts["channels_last"] is None else opts["channels_last"],
        },
        progress=click.echo,
    )
    table = report.markdown()
    write_text(out / "compare.md", table + "\n")
    write_json(out / "compare.json", {"options": plain(opts), **report.to_dict()})
    report.plot(out / "compare.png")
    click.echo("\n" + table)
    click.echo(f"\nwrote {out / 'compare.md'}, {out / 'compare.json'}, {out / 'compare.png'}")
