"""``superconv find-lr``: the LR range test on a dataset and model, with its table, plot, JSON and CSV; with
``--verify``, the suggestion checked by short one-cycle probes chosen on the validation split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from superconv.cli.group import CONTEXT, cli
from superconv.cli.options import FiniteFloat, data_model_options, prepare
from superconv.cli.rundir import claim_run_dir, default_out
from superconv.errors import ConfigError


@cli.command("find-lr", context_settings=CONTEXT)
@data_model_options
@click.option("--start-lr", type=FiniteFloat(), default=None, help="First LR of the sweep (default 1e-7).")
@click.option("--end-lr", type=FiniteFloat(), default=10.0, show_default=True)
@click.option("--num-iter", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--accumulation", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--val-batches",
    type=click.IntRange(min=1),
    default=None,
    help="Validation-loss mode: this many validation batches per step.",
)
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Output folder (default runs/find-lr-<time>)."
)
@click.option("--overwrite", is_flag=True, help="Replace the earlier results in --out.")
@click.option("--progress/--no-progress", default=None)
@click.option(
    "--verify/--no-verify",
    default=False,
    show_default=True,
    help="Check the suggestion: short one-cycle probes of candidate LRs, chosen by validation loss.",
)
@click.option(
    "--run-steps",
    type=click.IntRange(min=1),
    default=None,
    help="With --verify: optimizer updates of the run the LR is for (the probes take a share of it).",
)
def find_lr_command(**opts: Any) -> None:
    """Run the LR range test on a built-in dataset and model: suggestion table, plot and JSON."""
    import torch

    if opts["verify"] and opts["run_steps"] is None:
        raise ConfigError(
            "--verify needs --run-steps N (the optimizer updates of the run the LR is for, e.g. epochs x "
            "batches per epoch), but got none: each probe is a share of that run"
        )

    from superconv.device import resolve_precision
    from superconv.finder.lr_finder import find_lr
    from superconv.train.optim import make_optimizer

    out = claim_run_dir(opts["out"] or default_out("find-lr"), overwrite=opts["overwrite"], resume_hint=False)
    recipe, data, model, device = prepare(opts)
    model.to(device)
    opt = make_optimizer(
        model, recipe.optimizer, lr=1e-3, weight_decay=recipe.weight_decay, momentum=0.9, device=device
    )
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
    click.echo(result.confidence_text())
    kwargs = result.one_cycle_kwargs()
    if opts["verify"]:
        kwargs = _verify(result, model, opt, data, recipe, device, autocast_dtype, opts["run_steps"], out)
    click.echo(f"OneCycleLR: max_lr={kwargs['max_lr']:.3g}, div_factor={kwargs['div_factor']:.3g}")
    click.echo(f"plot: {out / 'lr_finder.png'}  json: {out / 'lr_finder.json'}  csv: {out / 'lr_finder.csv'}")


def _verify(result: Any, model: Any, opt: Any, data: Any, recipe: Any, device: Any, autocast_dtype: Any,
            run_steps: int, out: Path) -> dict[str, float]:  # fmt: skip
    """Probe the candidates on the validation split, print the choice, add it to the JSON; the kwargs to use."""
    import torch

    from superconv.files import write_json
    from superconv.finder.verify import verify

    if data.val is None:
        raise ConfigError(
            "--verify chooses on the validation split, but this dataset has none (--val-fraction 0?): pass "
            "--val-fraction 0.1, or leave --verify out"
        )
    check = verify(
        model,
        opt,
        result,
        data.train,
        data.val,
        criterion=torch.nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing),
        run_steps=run_steps,
        device=device,
        autocast_dtype=autocast_dtype,
        grad_scaler=torch.amp.GradScaler(device.type) if autocast_dtype is torch.float16 else None,
    )
    for c in check.candidates:
        mark = "  <- verified" if c.lr == check.lr else ""
        value = "diverged" if c.diverged else f"val loss {c.val_loss:.4f}"
        if c.val_accuracy is not None and not c.diverged:
            value += f", val accuracy {c.val_accuracy:.2f}%"
        click.echo(f"probe {c.lr:>10.3e}  {value}{mark}")
    click.echo(check.summary())
    write_json(out / "lr_finder.json", {**result.to_dict(), "verification": check.to_dict()})
    return check.one_cycle_kwargs()
