"""Fine-tuning a pretrained network the way fastai's ``fine_tune`` does, with super-convergence in each phase.

1. The new head alone, the pretrained body frozen, for a short one-cycle run (its own range test: it sizes the
   head's LR).
2. The whole network in one cycle, the body at ``body_lr_factor`` of the head's peak LR (discriminative learning
   rates), after a range test on the whole network with the head trained.

Each phase is an ordinary :func:`superconv.fit` run; with ``out_dir`` the head phase keeps its checkpoints in
``out_dir/head`` and the whole-network phase in ``out_dir``, so an interrupted fine-tune resumes in either phase.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from superconv import checks
from superconv.errors import ConfigError
from superconv.models import freeze, split_head_body
from superconv.train.checkpoint import load_checkpoint
from superconv.train.optim import OPTIMIZERS, make_optimizer
from superconv.train.state import FitResult
from superconv.train.trainer import fit

#: The body's share of the head's peak LR in the whole-network phase.
BODY_LR_FACTOR = 0.1


def fine_tune(
    model: nn.Module,
    train_loader: Any,
    val_loader: Any = None,
    *,
    head_epochs: int = 1,
    epochs: int | None = None,
    body_lr_factor: float = BODY_LR_FACTOR,
    optimizer: str = "adamw",
    weight_decay: float = 5e-4,
    momentum: float = 0.9,
    out_dir: str | Path | None = None,
    resume: bool = False,
    **fit_kwargs: Any,
) -> FitResult:
    """Train the new head first (body frozen), then the whole network with a lower LR for the body.

    Args:
        model: A network whose classifier head was replaced (``build_model(..., pretrained=...)``).
        head_epochs: Epochs of the head-only phase (0: skip it).
        epochs: Epochs of the whole-network phase (``None``: fit's default, or what fits a ``time_budget``).
        body_lr_factor: The body's peak LR as a fraction of the head's, in (0, 1].
        optimizer: ``"adamw"`` or ``"sgd"`` (built for each phase).
        out_dir, resume: As for :func:`superconv.fit`; the head phase uses ``out_dir/head``.
        **fit_kwargs: Everything else :func:`superconv.fit` takes (``test_loader`` is used after phase 2 only).

    Returns:
        The whole-network phase's :class:`FitResult`, its ``decisions`` saying what the head phase did.
    """
    checks.non_negative_int("head_epochs", head_epochs)
    checks.fraction("body_lr_factor", body_lr_factor, low_open=True, high_open=False)
    checks.one_of("optimizer", optimizer, OPTIMIZERS)
    head, body = split_head_body(model)
    if not body:
        raise ConfigError("The model has no body to fine-tune apart from its head: train it with fit() instead")
    out = Path(out_dir) if out_dir is not None else None
    note = "skipped (head_epochs=0)"
    if head_epochs:
        note = _head_phase(model, train_loader, val_loader, head, body, head_epochs, out, resume, optimizer,
                           weight_decay, momentum, fit_kwargs)  # fmt: skip
    device = next(model.parameters()).device
    parts = [(body, body_lr_factor), (head, 1.0)]
    opt = make_optimizer(model, optimizer, lr=1e-3, weight_decay=weight_decay, momentum=momentum, device=device,
                         parts=parts)  # fmt: skip
    whole_resume = resume and out is not None and (out / "last.pt").exists()
    result = fit(model, train_loader, val_loader, epochs=epochs, optimizer=opt, out_dir=out, resume=whole_resume,
                 **fit_kwargs)  # fmt: skip
    result.decisions["fine_tune"] = (
        f"head first ({note}), then the whole network with the body at {body_lr_factor:g} of the head's LR "
        f"({result.max_lr * body_lr_factor:.3g} vs {result.max_lr:.3g})"
    )
    return result


def _head_phase(
    model: nn.Module, train_loader: Any, val_loader: Any, head: list[nn.Parameter], body: list[nn.Parameter],
    epochs: int, out: Path | None, resume: bool, optimizer: str, weight_decay: float, momentum: float,
    fit_kwargs: dict[str, Any],
) -> str:  # fmt: skip
    """Phase 1: the body frozen, the head trained for ``epochs`` (resumed, or its result reloaded, from out/head)."""
    head_out = out / "head" if out is not None else None
    if resume and head_out is not None and (out / "last.pt").exists():  # type: ignore[operator]
        return "done before the resume"  # phase 2 had started: its checkpoint holds everything
    saved = head_out / "last.pt" if head_out is not None else None
    if resume and saved is not None and saved.exists() and load_checkpoint(saved).get("finished"):
        best = head_out / "best.pt"  # type: ignore[operator]
        model.load_state_dict(load_checkpoint(best if best.exists() else saved)["model"])
        return "finished before the resume, its weights reloaded"
    phase_kwargs = {k: v for k, v in fit_kwargs.items() if k not in ("test_loader", "time_budget", "patience")}
    freeze(body)
    try:
        opt = make_optimizer(model, optimizer, lr=1e-3, weight_decay=weight_decay, momentum=momentum,
                             device=next(model.parameters()).device, parts=[(head, 1.0)])  # fmt: skip
        result = fit(model, train_loader, val_loader, epochs=epochs, optimizer=opt, out_dir=head_out,
                     resume=bool(resume and saved is not None and saved.exists()),
                     **{**phase_kwargs, "ema": None})  # fmt: skip
    finally:
        freeze(body, frozen=False)
    accuracy = f", validation {result.best_val_accuracy:.2%}" if result.best_val_accuracy is not None else ""
    return f"{result.steps} updates at max_lr {result.max_lr:.3g}{accuracy}"
