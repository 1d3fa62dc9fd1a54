"""``superconv train``: the main job - range test, one cycle, early stopping, test on the best weights."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from superconv.cli.group import CONTEXT, cli
from superconv.cli.options import data_model_options, plain, prepare, schedule_options, shape_kwargs
from superconv.errors import CheckpointError


@cli.command(context_settings=CONTEXT)
@data_model_options
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Training epochs.")
@click.option("--max-lr", type=float, default=None, help="Peak LR (default: from the LR range test).")
@click.option(
    "--schedule",
    "schedule_name",
    default="one-cycle",
    show_default=True,
    type=click.Choice(["one-cycle", "one-cycle-no-tail", "fastai", "constant", "step", "cosine"]),
)
@schedule_options
@click.option(
    "--accumulation",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Batches per optimizer update.",
)
@click.option("--label-smoothing", type=click.FloatRange(0, 1, max_open=True), default=None)
@click.option(
    "--patience",
    type=click.IntRange(min=1),
    default=None,
    help="Early stopping: epochs without validation improvement (default 5).",
)
@click.option("--no-early-stopping", is_flag=True, help="Train all epochs.")
@click.option("--tta/--no-tta", default=None, help="Average predictions with the horizontal flip.")
@click.option(
    "--ema",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=None,
    metavar="DECAY",
    help="Evaluate an exponential moving average of the weights with this decay per update (e.g. 0.99).",
)
@click.option("--no-ema", is_flag=True, help="No weight average, whatever the recipe says.")
@click.option("--compile", "compile_model", is_flag=True, help="torch.compile the model.")
@click.option("--range-iters", type=click.IntRange(min=10), default=None, help="Updates in the LR range test.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run directory (default runs/train-<time>).",
)
@click.option(
    "--resume",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Continue the interrupted run in this directory (its saved options are used).",
)
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: when interactive).")
def train(**opts: Any) -> None:
    """Train on a dataset with super-convergence: range test, one cycle, early stopping, test on the best."""
    from superconv.train.report import write_run
    from superconv.train.trainer import fit

    resume_dir: Path | None = opts.pop("resume")
    if resume_dir is not None:
        config_path = resume_dir / "config.json"
        if not config_path.exists():
            raise CheckpointError(
                f"Cannot resume: {config_path} does not exist. Pass the directory of a run "
                "started with `superconv train --out DIR`"
            )
        saved = json.loads(config_path.read_text())
        opts = {**opts, **{k: v for k, v in saved["options"].items() if k in opts and k != "progress"}}
        opts["out"] = resume_dir
        for key in ("data_dir", "pretrained"):
            opts[key] = Path(opts[key]) if opts[key] else None
    recipe, data, model, device = prepare(
        opts,
        epochs=opts["epochs"],
        label_smoothing=opts["label_smoothing"],
        patience=opts["patience"],
        tta=opts["tta"],
        ema=opts["ema"],
        compile=True if opts["compile_model"] else None,
        range_test_iters=opts["range_iters"],
    )
    if opts["no_ema"]:
        if opts["ema"] is not None:
            raise click.UsageError("--ema and --no-ema contradict each other: give one of them")
        recipe = replace(recipe, ema=None)
    out = opts["out"] or Path("runs") / time.strftime("train-%Y%m%d-%H%M%S")
    shape = shape_kwargs(
        opts["preset"] or recipe.preset,
        pct_start=opts["pct_start"],
        pct_down=opts["pct_down"],
        anneal_strategy=opts["anneal_strategy"],
        div_factor=opts["div_factor"],
        final_div_factor=opts["final_div_factor"],
        three_phase=opts["three_phase"],
    )
    shape.update(
        base_momentum=opts["base_momentum"],
        max_momentum=opts["max_momentum"],
        cycle_momentum=opts["cycle_momentum"],
    )
    config = {
        "options": plain(opts),
        "recipe": recipe.to_dict(),
        "dataset": data.name,
        "classes": data.classes,
        "train_size": data.train_size,
        "device": str(device),
    }
    click.echo(
        f"superconv train: {data.name} ({data.train_size} training images, {data.num_classes} classes), "
        f"{recipe.model} width {recipe.width}, {recipe.optimizer}, batch {recipe.batch_size}, "
        f"{recipe.epochs} epochs on {device} -> {out}"
    )
    result = fit(
        model,
        data.train,
        data.val,
        epochs=recipe.epochs,
        max_lr=opts["max_lr"],
        optimizer=recipe.optimizer,
        weight_decay=recipe.weight_decay,
        label_smoothing=recipe.label_smoothing,
        schedule=opts["schedule_name"],
        schedule_kwargs=shape,
        accumulation_steps=opts["accumulation"],
        device=device,
        precision=opts["precision"],
        channels_last="auto" if opts["channels_last"] is None else opts["channels_last"],
        compile=recipe.compile,
        patience=None if opts["no_early_stopping"] else recipe.patience,
        test_loader=data.test,
        tta=recipe.tta,
        ema=recipe.ema,
        out_dir=out,
        resume=resume_dir is not None,
        range_test_kwargs={"num_iter": recipe.range_test_iters},
        progress=opts["progress"],
        config=config,
    )
    write_run(out, result, config)
    _print_summary(result, out)
    if result.interrupted:
        sys.exit(130)
    if result.diverged:
        sys.exit(1)


def _print_summary(result: Any, out: Path) -> None:
    lines = [
        f"max_lr {result.max_lr:.3g}"
        + (f" (range test {result.range_test_seconds:.1f} s)" if result.range_test is not None else " (given)")
    ]
    if result.best_val_accuracy is not None:
        lines.append(f"best validation accuracy {result.best_val_accuracy:.2%} (epoch {result.best_epoch})")
    if result.test_accuracy is not None:
        weights = f"best weights, EMA {result.ema:g}" if result.ema is not None else "best weights"
        lines.append(f"test accuracy {result.test_accuracy:.2%} ({weights})")
    lines.append(
        f"{result.epochs} epochs, {result.steps} updates, {result.train_seconds:.1f} s training "
        f"+ {result.range_test_seconds:.1f} s range test on {result.device} ({result.precision})"
    )
    click.echo("\n".join(lines))
    click.echo(f"run directory: {out} (metrics.json, epochs.csv, config.json, best.pt, last.pt, *.png)")
