"""The ``superconv`` command line: a thin layer over the library.

Bad input exits with status 2 and one line on stderr that says what to do.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from dataclasses import replace
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
        click.option(
            "--preset",
            type=click.Choice(["torch", "smith", "fastai"]),
            default=None,
            help="Named shape (default: superconv's training default, or torch's for `schedule`).",
        ),
        click.option("--pct-start", type=float, default=None, help="Fraction of the run warming up."),
        click.option(
            "--pct-down",
            type=float,
            default=None,
            help="Three-phase: fraction going back down to the initial LR (rest: annihilation).",
        ),
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
    from superconv.schedule.one_cycle import preset_kwargs

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


# --- shared data / model / training options ------------------------------------------------------------
DATASET_CHOICES = ["fashion-mnist", "cifar10", "digits", "imagefolder"]


def data_model_options(f: Any) -> Any:
    """What a practitioner changes: data, model, optimizer, device. Shared by train, find-lr, compare."""
    options = [
        click.option("--dataset", type=click.Choice(DATASET_CHOICES), default="fashion-mnist", show_default=True),
        click.option(
            "--data-dir",
            type=click.Path(path_type=Path),
            default=None,
            help="Where the data is (imagefolder: class-per-folder images, with or without train/val).",
        ),
        click.option(
            "--subset",
            type=click.IntRange(min=1),
            default=None,
            help="Use only this many training examples (quick runs).",
        ),
        click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True),
        click.option(
            "--image-size",
            type=click.IntRange(min=8),
            default=None,
            help="Square input side (imagefolder default 224).",
        ),
        click.option("--workers", type=click.IntRange(min=0), default=None, help="DataLoader workers (imagefolder)."),
        click.option(
            "--model",
            default=None,
            help="resnet-small, cnn, or a torchvision model name (mobilenet_v2, resnet18, ...).",
        ),
        click.option("--width", type=click.IntRange(min=1), default=None, help="Built-in models' base width."),
        click.option(
            "--pretrained",
            type=click.Path(path_type=Path),
            default=None,
            help="Local weights file for the model; its classifier head is replaced.",
        ),
        click.option(
            "--optimizer",
            type=click.Choice(["adamw", "sgd"]),
            default=None,
            help="AdamW (default) or SGD with Nesterov momentum.",
        ),
        click.option("--weight-decay", type=click.FloatRange(min=0), default=None),
        click.option("--batch-size", type=click.IntRange(min=1), default=None),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps."),
        click.option(
            "--precision",
            type=click.Choice(["auto", "bf16", "fp16", "fp32"]),
            default="auto",
            show_default=True,
        ),
        click.option(
            "--channels-last/--no-channels-last",
            default=None,
            help="Memory format for convolutions (default: on for GPUs and bf16 CPUs).",
        ),
        click.option("--seed", type=int, default=0, show_default=True),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _prepare(opts: dict[str, Any], **recipe_overrides: Any) -> tuple[Any, Any, Any, Any]:
    """Resolve the recipe, then load the data and build the model (imports the heavy parts)."""
    import torch

    from superconv.data import load_data
    from superconv.device import resolve_device
    from superconv.models import build_model
    from superconv.train.recipes import default_recipe, with_overrides

    device = resolve_device(opts["device"])
    recipe = with_overrides(
        default_recipe(device.type),
        model=opts["model"],
        width=opts["width"],
        batch_size=opts["batch_size"],
        optimizer=opts["optimizer"],
        weight_decay=opts["weight_decay"],
        **recipe_overrides,
    )
    torch.manual_seed(opts["seed"])
    data = load_data(
        opts["dataset"],
        data_dir=opts["data_dir"],
        batch_size=recipe.batch_size,
        val_fraction=opts["val_fraction"],
        device=device,
        seed=opts["seed"],
        subset=opts["subset"],
        num_workers=opts["workers"],
        image_size=opts["image_size"],
    )
    model = build_model(
        recipe.model,
        num_classes=data.num_classes,
        in_channels=data.in_channels,
        image_size=data.image_size,
        width=recipe.width,
        pretrained=opts["pretrained"],
    )
    return recipe, data, model, device


def _plain(opts: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in opts.items()}


# --- superconv train -----------------------------------------------------------------------------------
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
    recipe, data, model, device = _prepare(
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
        "options": _plain(opts),
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


# --- superconv find-lr ---------------------------------------------------------------------------------
@cli.command("find-lr", context_settings=CONTEXT)
@data_model_options
@click.option("--start-lr", type=float, default=None, help="First LR of the sweep (default 1e-7).")
@click.option("--end-lr", type=float, default=10.0, show_default=True)
@click.option("--num-iter", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--accumulation", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--val-batches",
    type=click.IntRange(min=1),
    default=None,
    help="Validation-loss mode: this many validation batches per step.",
)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/find-lr"), show_default=True
)
@click.option("--progress/--no-progress", default=None)
def find_lr_command(**opts: Any) -> None:
    """Run the LR range test on a built-in dataset and model: suggestion table, plot and JSON."""
    import torch

    from superconv.device import resolve_precision
    from superconv.finder.lr_finder import find_lr
    from superconv.train.optim import make_optimizer

    recipe, data, model, device = _prepare(opts)
    model.to(device)
    opt = make_optimizer(
        model, recipe.optimizer, lr=1e-3, weight_decay=recipe.weight_decay, momentum=0.9, device=device
    )
    out: Path = opts["out"]
    out.mkdir(parents=True, exist_ok=True)
    autocast_dtype = resolve_precision(opts["precision"], device)
    result = find_lr(
        model,
        opt,
        data.train,
        torch.nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing),
        device=device,
        plot_path=out / "lr_finder.png",
        json_path=out / "lr_finder.json",
        csv_path=out / "lr_finder.csv",
        start_lr=opts["start_lr"],
        end_lr=opts["end_lr"],
        num_iter=opts["num_iter"],
        accumulation_steps=opts["accumulation"],
        val_loader=data.val if opts["val_batches"] else None,
        val_batches=opts["val_batches"],
        autocast_dtype=autocast_dtype,
        grad_scaler=torch.amp.GradScaler(device.type) if autocast_dtype is torch.float16 else None,
        progress=opts["progress"],
    )
    click.echo(
        f"LR range test: {len(result.lrs)} of {result.num_iter} updates recorded, "
        f"{result.lrs[0]:.2e} -> {result.lrs[-1]:.2e}" + (f", stopped: {result.stop_reason}" if result.diverged else "")
    )
    click.echo(f"{'estimator':<12} {'max_lr':>10}")
    for name, value in result.estimates.items():
        mark = "  <- suggestion (default)" if name == result.estimator else ""
        click.echo(f"{name:<12} {value:>10.3e}{mark}")
    click.echo(f"quality: {result.quality}" + (f" ({result.warning})" if result.warning else ""))
    kwargs = result.one_cycle_kwargs()
    click.echo(f"OneCycleLR: max_lr={kwargs['max_lr']:.3g}, div_factor={kwargs['div_factor']:.3g}")
    click.echo(f"plot: {out / 'lr_finder.png'}  json: {out / 'lr_finder.json'}  csv: {out / 'lr_finder.csv'}")


# --- superconv compare ---------------------------------------------------------------------------------
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
    help="Optimizer updates between test evaluations (default: 4 per epoch).",
)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/compare"), show_default=True
)
def compare(**opts: Any) -> None:
    """Show super-convergence on your data: one-cycle vs tuned constant, step-decay and cosine baselines."""
    from superconv.comparison.runner import compare as run_compare
    from superconv.files import write_json
    from superconv.models import build_model

    schedules = [s.strip() for s in opts["schedules"].split(",") if s.strip()]
    recipe, data, _, device = _prepare(opts, epochs=opts["epochs"])

    def make_model(seed: int) -> Any:
        import torch

        torch.manual_seed(seed)
        return build_model(
            recipe.model,
            num_classes=data.num_classes,
            in_channels=data.in_channels,
            image_size=data.image_size,
            width=recipe.width,
            pretrained=opts["pretrained"],
        )

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
            "range_test_kwargs": {"num_iter": recipe.range_test_iters},
            "channels_last": "auto" if opts["channels_last"] is None else opts["channels_last"],
        },
        progress=click.echo,
    )
    out: Path = opts["out"]
    out.mkdir(parents=True, exist_ok=True)
    table = report.markdown()
    (out / "compare.md").write_text(table + "\n")
    write_json(out / "compare.json", {"options": _plain(opts), **report.to_dict()})
    report.plot(out / "compare.png")
    click.echo("\n" + table)
    click.echo(f"\nwrote {out / 'compare.md'}, {out / 'compare.json'}, {out / 'compare.png'}")


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
