"""``superconv train``: the main job - range test, one cycle, early stopping, test on the best weights.

With no tuning options the run adapts to the data and the machine (batch, length, format, weight average,
flips; ``superconv.train.recipes``) and says what it decided. The run directory is claimed first and
``config.json`` written before training, so a run killed at any moment can be resumed with ``--resume DIR``.

Several processes: ``torchrun --nproc-per-node N -m superconv train ...`` (also across machines, with torchrun's
rendezvous options), or ``superconv train --nproc-per-node N ...``, which starts them itself through torch's own
launcher (``torch.distributed.run``). Rank 0 claims the run directory, prints and writes; a worker group that
torchrun restarts (``--max-restarts``) resumes from the run's last checkpoint (docs/distributed.md).
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

import superconv.distributed as distributed
from superconv.cli.group import CONTEXT, cli
from superconv.cli.options import (
    FiniteFloat,
    base_recipe,
    build,
    data_model_options,
    load,
    plain,
    schedule_options,
    shape_kwargs,
)
from superconv.cli.rundir import claim_run_dir, default_out, read_saved_run
from superconv.files import write_json


class Seconds(click.ParamType):
    """A duration: seconds, or a number with the unit s, m or h (``90``, ``90s``, ``2m``)."""

    name = "seconds"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        from superconv.errors import ConfigError
        from superconv.train.budget import parse_seconds

        try:
            return parse_seconds(value)
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


@cli.command(context_settings=CONTEXT)
@data_model_options
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Training epochs (default: from the data).")
@click.option(
    "--time-budget",
    type=Seconds(),
    default=None,
    help="Seconds (or 2m) for the whole command; the run's length is what fits, measured here.",
)
@click.option("--max-lr", type=FiniteFloat(min=0, min_open=True), default=None, help="Peak LR (default: range test).")
@click.option(
    "--schedule",
    "schedule_name",
    default="one-cycle",
    show_default=True,
    type=click.Choice(["one-cycle", "one-cycle-no-tail", "fastai", "constant", "step", "cosine"]),
)
@schedule_options
@click.option("--accumulation", type=click.IntRange(min=1), default=1, show_default=True, help="Batches per update.")
@click.option("--label-smoothing", type=FiniteFloat(0, 1, max_open=True), default=None)
@click.option(
    "--patience", type=click.IntRange(min=1), default=None, help="Early stopping: epochs without improvement (5)."
)
@click.option("--no-early-stopping", is_flag=True, help="Train all epochs.")
@click.option("--tta/--no-tta", default=None, help="Average predictions with the horizontal flip.")
@click.option(
    "--ema",
    type=FiniteFloat(0, 1, min_open=True, max_open=True),
    default=None,
    metavar="DECAY",
    help="Evaluate an exponential moving average of the weights with this decay per update (e.g. 0.99).",
)
@click.option("--no-ema", is_flag=True, help="No weight average, whatever the recipe says.")
@click.option("--compile", "compile_model", is_flag=True, help="torch.compile the model.")
@click.option(
    "--head-epochs",
    type=click.IntRange(min=0),
    default=None,
    help="With --pretrained: epochs training the new head alone before the whole network (default 1; 0: none).",
)
@click.option(
    "--body-lr-factor",
    type=FiniteFloat(0, 1, min_open=True),
    default=None,
    help="With --pretrained: the body's peak LR as a fraction of the head's (default 0.1).",
)
@click.option("--range-iters", type=click.IntRange(min=10), default=None, help="Updates in the LR range test.")
@click.option(
    "--verify/--no-verify",
    default=None,
    help="Check the range test's suggestion with short probes, chosen by validation (default: on with a "
    "validation set and a one-cycle schedule).",
)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Run directory (default runs/train-<time>).")
@click.option("--overwrite", is_flag=True, help="Replace the earlier run in --out (its files are deleted).")
@click.option(
    "--resume",
    type=click.Path(path_type=Path),
    default=None,
    help="Continue the run in this directory with its saved options (a finished run is left as it is).",
)
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: when interactive).")
@click.option(
    "--nproc-per-node",
    type=click.IntRange(min=1),
    default=None,
    help="Train with this many processes on this machine (one per GPU; DDP), started by torch.distributed.run.",
)
def train(**opts: Any) -> None:
    """Train on a dataset with super-convergence: range test, one cycle, early stopping, test on the best."""
    from superconv.device import resolve_device

    context = click.get_current_context().obj or {}
    nproc = opts.pop("nproc_per_node")
    if nproc is not None and nproc > 1 and not distributed.launched():
        sys.exit(_launch(nproc, context.get("argv")))
    with distributed.session(resolve_device(opts["device"]).type) as several:
        if several and resolve_device(opts["device"]).type == "cuda":
            opts["device"] = str(distributed.local_device("cuda"))  # this process's GPU (LOCAL_RANK)
        _train(opts, context)


def _launch(nproc: int, argv: list[str] | None) -> int:
    """Run this command again as ``nproc`` processes under torch's launcher; its exit status."""
    if argv is None:
        raise click.UsageError("--nproc-per-node needs the command line: run it as `superconv train ...`")
    rest, skip = [], False
    for arg in argv:
        if skip or arg == "--nproc-per-node" or arg.startswith("--nproc-per-node="):
            skip = arg == "--nproc-per-node"
            continue
        rest.append(arg)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    child = subprocess.Popen([*command, "-m", "superconv", *rest])
    try:
        return child.wait()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the launcher passes it on to its workers, which save and stop
        child.terminate()
        return child.wait()


def _train(opts: dict[str, Any], context: dict[str, Any]) -> None:
    from superconv.train.budget import TimeBudget

    started = context.get("started") or time.monotonic()  # main() passes the process's start
    resume_dir: Path | None = opts.pop("resume")
    if resume_dir is None and distributed.restarted() and opts["out"] is not None:
        resume_dir = opts["out"]  # torchrun restarted the workers after a failure: continue the run
    if resume_dir is not None:
        saved = read_saved_run(resume_dir)
        if saved.finished:
            click.echo(f"superconv train: {resume_dir} has finished ({saved.summary}); nothing to resume")
            return
        opts = {**opts, **saved.options, "progress": opts["progress"], "out": resume_dir, "overwrite": False}
        resumable = saved.has_checkpoint
        if not resumable:
            click.echo(f"superconv train: {resume_dir} holds no checkpoint yet; starting it again with its options")
    else:
        opts["out"] = distributed.on_main(_claim, opts)  # rank 0 claims it; every process learns the folder
        resumable = False
    if opts["no_ema"] and opts["ema"] is not None:
        raise click.UsageError("--ema and --no-ema contradict each other: give one of them")
    cap = opts["time_budget"] or (None if opts["epochs"] else base_recipe(opts).time_cap)
    _run(opts, resume=resumable, budget=TimeBudget(cap, started) if cap else None)


def _claim(opts: dict[str, Any]) -> Path:
    out = claim_run_dir(opts["out"] or default_out("train"), overwrite=opts["overwrite"])
    write_json(out / "config.json", {"options": plain({**opts, "out": out})})  # resumable from here on
    return out


def _recipe(opts: dict[str, Any], data: Any) -> tuple[Any, dict[str, str]]:
    """The device's recipe with the given options, adapted to the data (every adapted value with its reason)."""
    from superconv.device import resolve_device
    from superconv.train.recipes import adapt

    given = {
        "epochs": opts["epochs"],
        "time_budget": opts["time_budget"],
        "batch_size": opts["batch_size"],
        "range_test_iters": opts["range_iters"],
        "tta": opts["tta"],
    }
    recipe = base_recipe(
        opts,
        epochs=opts["epochs"],
        label_smoothing=opts["label_smoothing"],
        patience=opts["patience"],
        tta=opts["tta"],
        ema=None if opts["no_ema"] else opts["ema"],
        compile=True if opts["compile_model"] else None,
        range_test_iters=opts["range_iters"],
    )
    if opts["no_ema"]:
        recipe = replace(recipe, ema=None)
    flip = bool(getattr(data, "flip_invariant", data.name in ("fashion-mnist", "cifar10")))
    device_type = resolve_device(opts["device"]).type
    return adapt(recipe, train_size=data.train_size, flip_invariant=flip, device_type=device_type, given=given)


def _run(opts: dict[str, Any], *, resume: bool, budget: Any) -> None:
    from superconv.train.report import write_run

    out: Path = opts["out"]
    if not distributed.is_main():
        distributed.barrier()  # rank 0 loads first: a download or a cache is written once
    data = load(opts, opts["batch_size"] or base_recipe(opts).batch_size)
    if distributed.is_main():
        distributed.barrier()
    recipe, decisions = _recipe(opts, data)
    if recipe.batch_size != data.train.batch_size:
        data = data.with_batch_size(recipe.batch_size)
    model = build(opts, recipe, data)
    config = _config(opts, recipe, data, decisions)
    main = distributed.is_main()
    if main:
        write_json(out / "config.json", config)  # before training: a run killed at any moment can be resumed
        _echo_header(opts, data, recipe, decisions, out)
    train, tuning = _trainer(opts)
    result = train(
        model, data.train, data.val, **tuning, epochs=recipe.epochs, max_lr=opts["max_lr"], optimizer=recipe.optimizer,
        weight_decay=recipe.weight_decay, label_smoothing=recipe.label_smoothing, schedule=opts["schedule_name"],
        schedule_kwargs=_shape(opts, recipe), accumulation_steps=opts["accumulation"], device=opts["device"],
        precision=opts["precision"], channels_last="auto" if opts["channels_last"] is None else opts["channels_last"],
        compile=recipe.compile, patience=None if opts["no_early_stopping"] or data.val is None else recipe.patience,
        test_loader=data.test, tta=bool(recipe.tta), ema=recipe.ema, out_dir=out, resume=resume,
        range_test_kwargs={"num_iter": recipe.range_test_iters}, progress=opts["progress"], config=config,
        time_budget=budget, budget_reserve=2.0 if budget is not None else 0.0, verify=opts["verify"],
    )  # fmt: skip
    config["decisions"].update(result.decisions)
    if main:
        write_run(out, result, config)
        _print_summary(result, out)
    if result.interrupted:
        sys.exit(130)
    if result.diverged:
        sys.exit(1)


def _trainer(opts: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``fit``, or with pretrained weights ``fine_tune`` (head first, then the whole net with a lower body LR)."""
    from superconv.train.finetune import BODY_LR_FACTOR, fine_tune
    from superconv.train.trainer import fit

    head_epochs = 1 if opts["head_epochs"] is None else opts["head_epochs"]
    if opts["pretrained"] is None:
        if opts["head_epochs"] is not None or opts["body_lr_factor"] is not None:
            raise click.UsageError("--head-epochs and --body-lr-factor fine-tune pretrained weights: add --pretrained")
        return fit, {}
    return fine_tune, {"head_epochs": head_epochs, "body_lr_factor": opts["body_lr_factor"] or BODY_LR_FACTOR}


def _shape(opts: dict[str, Any], recipe: Any) -> dict[str, Any]:
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
        base_momentum=opts["base_momentum"], max_momentum=opts["max_momentum"], cycle_momentum=opts["cycle_momentum"]
    )
    return shape


def _config(opts: dict[str, Any], recipe: Any, data: Any, decisions: dict[str, str]) -> dict[str, Any]:
    from superconv.device import resolve_device

    return {
        "options": plain(opts),
        "recipe": recipe.to_dict(),
        "decisions": dict(getattr(data, "decisions", {}) or {}) | decisions,
        "dataset": data.name,
        "classes": data.classes,
        "train_size": data.train_size,
        "device": str(resolve_device(opts["device"])),
        "processes": distributed.world_size(),
    }


def _echo_header(opts: dict[str, Any], data: Any, recipe: Any, decisions: dict[str, str], out: Path) -> None:
    from superconv.models import describe_model

    model = describe_model(recipe.model, recipe.width, opts["pretrained"])
    click.echo(
        f"superconv train: {data.name} ({data.train_size} training images, {data.num_classes} classes), "
        f"{model}, {recipe.optimizer}, batch {recipe.batch_size} -> {out}"
    )
    for name, why in {**(getattr(data, "decisions", None) or {}), **decisions}.items():
        click.echo(f"  {name}: {why}")


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
    if result.skipped_steps:
        lines.append(f"{result.skipped_steps} updates skipped by the fp16 GradScaler (inf/NaN gradients)")
    click.echo("\n".join(lines))
    click.echo(f"run directory: {out} (metrics.json, epochs.csv, config.json, best.pt, last.pt, *.png)")
