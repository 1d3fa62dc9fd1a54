"""Verify a range test's suggestion: short one-cycle probes at a few candidate LRs, chosen by validation.

The range test reads a curve measured while the LR keeps rising; the run the LR is for warms up, peaks and
anneals. :func:`verify` checks the suggestion empirically: it takes the suggestion and neighbours a factor
``spacing`` apart, trains a compressed one-cycle run (:mod:`superconv.finder.probe`) at each from the SAME
starting weights, optimizer state, RNG streams and batch order, and keeps the candidate with the best
validation metric. The model, the optimizer (state and hyperparameters), a GradScaler, the RNG streams and
the training loader's position are restored exactly after every probe, also when a probe raises.

The defaults were chosen on the development workloads of ``benchmarks/lr_suggestion.py`` (round 4 of issue 18:
nineteen workloads, by validation accuracy) among candidate sets, probe lengths, metrics and tie rules whose probes
cost at most 15% of the run: two candidates from different estimators
(:func:`superconv.finder.candidates.default_candidates`: half the suggestion, and torch-lr-finder's steepest point
read off the same sweep), each probed for :data:`DEFAULT_PROBE_FRACTION` of the run, the better by validation loss.
Short probes carry a short-horizon bias: they cannot see that a run which stays near its peak far longer falls off
a cliff there (an MLP with SGD whose 7.5% probe at 1.6x the suggestion was the best, while its full run lost 38
points), so neighbours ABOVE the suggestion are risky; ``span=(1, 1)`` still probes them, ideally with longer
probes (``probe_fraction``). Where the probes learn nothing yet (tasks a run only solves late: on the benchmark's
sequence tasks even probes of 15% of the run sat at chance over the whole good LR range), no probe can choose and
the choice between the candidates is a coin toss.

Example:
    >>> import torch
    >>> from superconv.finder import LRFinder
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = torch.nn.Linear(4, 3)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    >>> data = [(torch.randn(16, 4), torch.randint(0, 3, (16,))) for _ in range(8)]
    >>> crit = torch.nn.CrossEntropyLoss()
    >>> result = LRFinder(model, opt, crit).range_test(data, num_iter=30)
    >>> check = verify(model, opt, result, data, data[:2], criterion=crit, probe_steps=10)
    >>> 1 <= len(check.candidates) <= 2, check.lr in [c.lr for c in check.candidates], check.metric
    (True, True, 'loss')
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

import superconv.finder.confidence as conf
import superconv.finder.suggest as suggest
from superconv import checks
from superconv.errors import ConfigError
from superconv.finder.batches import LossFn, check_loader, cycle, to_device
from superconv.finder.candidates import DEFAULT_SPACING, candidate_lrs, default_candidates
from superconv.finder.probe import ProbeConfig, ProbeOutcome, run_probe
from superconv.finder.result import RangeTestResult
from superconv.finder.snapshot import Snapshot

Metric = Literal["loss", "accuracy"]
OnTie = Literal["suggestion", "between", "best"]
METRICS = ("loss", "accuracy", "auto")

#: Each probe's share of the updates of the run the LR is for (chosen on the benchmark's development workloads:
#: two probes, 15% of the run).
DEFAULT_PROBE_FRACTION = 0.075
#: Probes shorter than this cannot warm up and anneal meaningfully.
MIN_PROBE_STEPS = 10
#: Validation batches each probe is measured on (the same batches for every probe).
DEFAULT_VAL_BATCHES = 8
#: The probes TIE when the best one's validation accuracy is ahead of the runner-up's by no more than this many
#: standard errors (:func:`binomial_noise`).
DEFAULT_TIE_SIGMAS = 1.0
#: What a tie trains at (:func:`tie_lr`): "suggestion" (the tied LR nearest the range test's suggestion),
#: "between" (their geometric mean) or "best" (the best probe, ties ignored). Ties exist for accuracy only, and the
#: default metric is the loss: on the benchmark's development workloads no tie rule won (round 4 of issue 18).
DEFAULT_ON_TIE: OnTie = "best"
#: When every probe learned nothing (each at the majority class's share), probe the same candidates once more, each
#: for this share of the run (``None``: never). Off: on the benchmark's development workloads (round 5) probes of 30%
#: after such probes fixed some late-learning tasks and broke others, and the objective got worse (5.26 -> 6.01).
DEFAULT_ESCALATION: float | None = None
#: What the probes are compared by (chosen on the development workloads, round 4): the validation loss.
DEFAULT_METRIC: Literal["auto", "loss", "accuracy"] = "loss"
ON_TIE = ("suggestion", "between", "best")


@dataclass(frozen=True)
class Verification:
    """The outcome of :func:`verify`.

    Attributes:
        lr: The chosen LR: the ``max_lr`` to train with.
        suggestion: The range test's suggestion the candidates were centred on.
        div_factor: The range test's recommended ``div_factor`` (also used by the probes unless overridden).
        metric: "loss" or "accuracy": what chose (``metric="auto"`` resolved).
        candidates: Each probe's outcome, in increasing LR.
        chosen: The index of the best candidate.
        runner_up: The index of the next best candidate that did not diverge, or ``None``.
        tie: Whether the probes could not tell the best from another one (accuracy ahead by no more than
            ``tie_sigmas`` standard errors, :func:`tied`); ``lr`` is then what ``on_tie`` says (:func:`tie_lr`).
        on_tie: The tie rule that was asked for.
        earlier: The first, shorter probes when they learned nothing and ``candidates`` are the longer ones that
            followed (``escalate``); empty otherwise.
        margin: How far the chosen candidate is ahead of the runner-up (accuracy points, or loss); NaN if none.
        noise: The standard error of that margin over the validation batches (NaN with one batch).
        probe_steps: Optimizer updates per probe.
        run_steps: Updates of the run the LR is for, when given (then ``cost_fraction`` is known).
        seconds: Wall-clock seconds of the whole verification (probes, validation, restores).
        confidence: How sure the choice is (probes and curve together).
    """

    lr: float
    suggestion: float
    div_factor: float
    metric: Metric
    candidates: tuple[ProbeOutcome, ...]
    chosen: int
    runner_up: int | None
    tie: bool
    on_tie: str
    earlier: tuple[ProbeOutcome, ...]
    margin: float
    noise: float
    probe_steps: int
    run_steps: int | None
    seconds: float
    confidence: conf.Confidence

    @property
    def cost_fraction(self) -> float:
        """The probes' updates (the earlier, shorter ones included) as a fraction of the run's (NaN when
        ``run_steps`` was not given)."""
        if not self.run_steps:
            return math.nan
        return sum(c.updates for c in (*self.earlier, *self.candidates)) / self.run_steps

    def one_cycle_kwargs(self) -> dict[str, float]:
        """``{"max_lr": lr, "div_factor": div_factor}`` for :class:`superconv.OneCycleLR`."""
        return {"max_lr": float(self.lr), "div_factor": float(self.div_factor)}

    def margin_text(self) -> str:
        """E.g. ``0.031: 0.6 pt ahead of 0.01 in probes``, or ``0.031: probe val loss 0.05 lower than at 0.01``."""
        head = f"{self.lr:.2g}"
        if self.runner_up is None:
            return f"{head}: the only probe that did not diverge"
        other = self.candidates[self.runner_up].lr
        best = self.candidates[self.chosen].lr
        if self.tie:
            rule = {"suggestion": "the one nearer the range test's suggestion", "between": "their geometric mean"}
            return (f"{head}: the probes tie ({best:.2g} vs {other:.2g}: {self.margin:.2g} pt apart in probes, within "
                    f"noise); {rule.get(self.on_tie, 'the better one')}")  # fmt: skip
        if self.metric == "accuracy":
            return f"{head}: {self.margin:.2g} pt ahead of {other:.2g} in probes"
        return f"{head}: probe val loss {self.margin:.3g} lower than at {other:.2g}"

    def summary(self) -> str:
        """One line for humans: the choice, its margin, the probes' cost and the confidence."""
        cost = f", {self.cost_fraction:.0%} of the run" if math.isfinite(self.cost_fraction) else ""
        probes = f"{len(self.candidates)} probes of {self.probe_steps} updates, {self.seconds:.1f} s{cost}"
        if self.earlier:
            probes = f"{len(self.earlier)} probes of {self.earlier[0].updates} updates learned nothing, then {probes}"
        return f"verified max_lr={self.margin_text()} ({probes}); {self.confidence.summary()}"

    def to_dict(self) -> dict[str, Any]:
        """Plain data (numbers, strings, lists, dicts): JSON-serializable."""
        return {
            "lr": self.lr,
            "suggestion": self.suggestion,
            "div_factor": self.div_factor,
            "metric": self.metric,
            "candidates": [c.to_dict() for c in self.candidates],
            "chosen": self.chosen,
            "runner_up": self.runner_up,
            "tie": self.tie,
            "on_tie": self.on_tie,
            "earlier": [c.to_dict() for c in self.earlier],
            "margin": self.margin,
            "noise": self.noise,
            "probe_steps": self.probe_steps,
            "run_steps": self.run_steps,
            "cost_fraction": self.cost_fraction,
            "seconds": self.seconds,
            "confidence": self.confidence.to_dict(),
            "summary": self.summary(),
        }


def choose(outcomes: Sequence[ProbeOutcome], metric: Metric) -> tuple[int, int | None]:
    """The index of the best outcome and of the runner-up (``None`` if no other finished).

    Accuracy ties are broken by the lower validation loss. A diverged probe is never chosen unless every
    probe diverged; then the lowest LR is.
    """
    ok = [i for i, o in enumerate(outcomes) if not o.diverged]
    if not ok:
        return min(range(len(outcomes)), key=lambda i: outcomes[i].lr), None

    def key(i: int) -> tuple[float, float]:
        o = outcomes[i]
        acc = o.val_accuracy if o.val_accuracy is not None else -math.inf
        return (acc, -o.val_loss) if metric == "accuracy" else (-o.val_loss, 0.0)

    ranked = sorted(ok, key=key, reverse=True)
    return ranked[0], ranked[1] if len(ranked) > 1 else None


def binomial_noise(a: float, b: float, examples: int) -> float:
    """The standard error, in points, of the difference of two accuracies ``a`` and ``b`` (percent), each measured
    on ``examples`` predictions, taken as independent (NaN without examples).

    The probes' predictions are of the same examples, which only makes the true error smaller: a conservative
    yardstick that needs nothing but the two accuracies and the count.

    Example:
        >>> round(binomial_noise(80.0, 82.0, 1000), 2)
        1.75
    """
    if examples < 1:
        return math.nan
    p, q = a / 100.0, b / 100.0
    return 100.0 * math.sqrt((p * (1 - p) + q * (1 - q)) / examples)


def tied(best: float, other: float, examples: int, sigmas: float) -> bool:
    """Whether a best validation accuracy ``best`` (percent) is ahead of ``other`` by no more than ``sigmas``
    binomial standard errors (:func:`binomial_noise`) on ``examples`` predictions: the probes cannot tell them apart.
    Never with ``sigmas`` 0 or without examples.

    Example:
        >>> tied(81.0, 80.5, examples=1000, sigmas=1.0), tied(85.0, 80.0, examples=1000, sigmas=1.0)
        (True, False)
    """
    noise = binomial_noise(best, other, examples)
    return sigmas > 0 and math.isfinite(noise) and best - other <= sigmas * noise


def tie_lr(lrs: Sequence[float], suggestion: float, on_tie: str) -> float:
    """What to train at when the probes at ``lrs`` tie: the best probe's LR first, then every LR whose probe the
    best one is not clearly ahead of (:func:`tied`).

    * "suggestion": of those, the LR nearest the range test's ``suggestion`` (on the log scale): the probes cannot
      decide, so the curve's own estimate does. Where the probes tie because they learned nothing yet (tasks a
      run only solves late: every probe at chance), an accidental lead is noise.
    * "between": their geometric mean, the safer point where validation accuracy is concave in log-LR around its
      peak; not where the probes tie at chance below a cliff (it can land on the cliff).
    * "best": the best probe's LR (ties ignored).

    Example:
        >>> tie_lr([0.01, 0.04], suggestion=0.04, on_tie="suggestion"), round(tie_lr([0.01, 0.04], 0.04, "between"), 9)
        (0.04, 0.02)
    """
    if on_tie == "between":
        return math.exp(sum(math.log(lr) for lr in lrs) / len(lrs))
    if on_tie == "suggestion" and suggestion > 0 and math.isfinite(suggestion):
        return min(lrs, key=lambda lr: abs(math.log(lr / suggestion)))
    return lrs[0]


def paired_noise(a: ProbeOutcome, b: ProbeOutcome, metric: Metric) -> float:
    """The standard error of ``a``'s metric minus ``b``'s, from their paired validation batches (NaN if < 2)."""
    xs, ys = (a.batch_accuracies, b.batch_accuracies) if metric == "accuracy" else (a.batch_losses, b.batch_losses)
    diffs = [x - y for x, y in zip(xs, ys)]
    if len(diffs) < 2:
        return math.nan
    return statistics.stdev(diffs) / math.sqrt(len(diffs))


def verify(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    result: RangeTestResult,
    train_loader: Iterable[Any],
    val_loader: Iterable[Any],
    *,
    criterion: Callable[..., torch.Tensor] | None = None,
    loss_fn: LossFn | None = None,
    candidates: Sequence[float] | None = None,
    spacing: float = DEFAULT_SPACING,
    span: tuple[int, int] | None = None,
    run_steps: int | None = None,
    probe_fraction: float = DEFAULT_PROBE_FRACTION,
    probe_steps: int | None = None,
    metric: Literal["auto", "loss", "accuracy"] = DEFAULT_METRIC,
    on_tie: OnTie = DEFAULT_ON_TIE,
    tie_sigmas: float = DEFAULT_TIE_SIGMAS,
    escalate: float | None = DEFAULT_ESCALATION,
    val_batches: int = DEFAULT_VAL_BATCHES,
    schedule: Mapping[str, Any] | None = None,
    accumulation_steps: int = 1,
    device: str | torch.device | None = None,
    autocast_dtype: torch.dtype | None = None,
    grad_scaler: Any | None = None,
    snapshot_device: str | torch.device = "cpu",
) -> Verification:
    """Probe candidate LRs read off the range test with short one-cycle runs; keep the best by validation.

    Args:
        model: The model (left exactly as it was: values, modes, gradients, device).
        optimizer: Its optimizer (state and hyperparameters left exactly as they were); the probes use its
            hyperparameters (momentum, betas, weight decay) with the probe's LR and momentum schedule.
        result: The range test's result: its curve gives the default candidates and the curve part of the
            confidence, its ``div_factor`` shapes the probes.
        train_loader: Training batches; every probe starts from the loader's current position (restored).
        val_loader: Validation batches; the first ``val_batches`` are kept and reused by every probe.
        criterion: ``criterion(output, target)`` for ``(inputs, ..., target)`` batches.
        loss_fn: ``loss_fn(model, batch) -> scalar tensor`` for any other batch shape.
        candidates: The LRs to probe; default: :func:`superconv.finder.candidates.default_candidates` (half the
            suggestion and torch-lr-finder's steepest point of the same sweep), or the neighbours ``span`` asks for.
        spacing: With ``span``: the ratio of neighbouring candidates.
        span: Probe the suggestion and neighbours instead (:func:`superconv.finder.candidates.candidate_lrs`):
            how many lie below and above it (``(1, 0)``: suggestion / spacing and the suggestion; ``(1, 1)`` adds
            suggestion * spacing).
        run_steps: Optimizer updates of the run the LR is for; each probe then takes ``probe_fraction`` of it.
        probe_fraction: Each probe's share of ``run_steps``, in (0, 1).
        probe_steps: Updates per probe (overrides ``run_steps * probe_fraction``; at least 10).
        metric: Choose by validation "loss" (any task) or "accuracy" (classification; ties by loss); "auto":
            accuracy when every probe could measure it (class-index targets, one score per class), else loss.
        on_tie: By accuracy, when the probes tie (the best ahead of others by no more than ``tie_sigmas``
            standard errors, :func:`tied`): "suggestion" trains at the tied LR nearest the range test's
            suggestion, "between" at their geometric mean, "best" at the best probe's (:func:`tie_lr`). Choosing
            by loss always takes the best probe's.
        tie_sigmas: How many standard errors a lead must exceed to count (0: never a tie).
        escalate: When every probe learned nothing (each at the majority class's share: a task a run only learns
            later), probe the same candidates once more, each for this share of the run (``None``: never).
        val_batches: Validation batches each probe is measured on (at least 2 give a noise estimate).
        schedule: Extra :class:`superconv.OneCycleLR` keyword arguments for the probes (the run's shape, e.g.
            ``{"pct_start": 0.25}``); ``div_factor`` defaults to ``result.div_factor``.
        accumulation_steps: Micro-batches per optimizer update.
        device: Where to run the probes (the model is moved there and back); ``None``: where it is.
        autocast_dtype: ``torch.bfloat16`` or ``torch.float16`` for autocast, or ``None``.
        grad_scaler: A ``torch.amp.GradScaler`` (its state is restored after every probe).
        snapshot_device: Where the copy of the starting state lives ("cpu", or e.g. "cuda" for speed).

    Returns:
        A :class:`Verification` (``.lr`` is the LR to use; ``.summary()`` says why and how sure).

    Raises:
        ConfigError: For a bad argument; the message says what was expected.
    """
    lrs, steps, dev = _check(model, optimizer, result, train_loader, val_loader, candidates, spacing, span, run_steps,
                             probe_fraction, probe_steps, metric, on_tie, tie_sigmas, escalate, val_batches,
                             accumulation_steps, device, autocast_dtype, criterion, loss_fn)  # fmt: skip
    config = ProbeConfig(steps=steps, schedule={"div_factor": float(result.div_factor), **(schedule or {})},
                         criterion=criterion, loss_fn=loss_fn, accuracy=metric == "accuracy",
                         accuracy_if_defined=metric != "accuracy",  # also by loss: did the probes learn anything?
                         accumulation_steps=accumulation_steps, autocast_dtype=autocast_dtype,
                         grad_scaler=grad_scaler)  # fmt: skip
    t0 = time.perf_counter()
    probe = functools.partial(_probe_all, model, optimizer, lrs, train_loader, val_loader, val_batches, device=dev,
                              snapshot_device=snapshot_device)  # fmt: skip
    outcomes, chance = probe(config)
    earlier: tuple[ProbeOutcome, ...] = ()
    if escalate is not None and _learned_nothing(outcomes, chance):  # once more, longer: see ``escalate``
        earlier, config = tuple(outcomes), _longer(config, escalate, run_steps, probe_fraction)
        outcomes, chance = probe(config)
    return _verdict(outcomes, chance, earlier, config, result, metric, on_tie, tie_sigmas, run_steps, t0)


def _verdict(
    outcomes: Sequence[ProbeOutcome],
    chance: float | None,
    earlier: tuple[ProbeOutcome, ...],
    config: ProbeConfig,
    result: RangeTestResult,
    metric: str,
    on_tie: OnTie,
    tie_sigmas: float,
    run_steps: int | None,
    t0: float,
) -> Verification:
    """The choice among the probes' outcomes, its margin, the tie rule and the confidence (:func:`verify`)."""
    resolved: Metric = "accuracy" if metric == "accuracy" else "loss" if metric == "loss" else _resolved(outcomes)
    chosen, runner_up = choose(outcomes, resolved)
    margin, noise, probes = _judge(outcomes, chosen, runner_up, resolved, chance)
    level = [i for i, o in enumerate(outcomes) if i != chosen and _tied(outcomes[chosen], o, resolved, tie_sigmas)]
    lr = tie_lr([outcomes[i].lr for i in [chosen, *level]], float(result.suggestion), on_tie)
    return Verification(
        lr=lr,
        suggestion=float(result.suggestion),
        div_factor=float(config.schedule["div_factor"]),
        metric=resolved,
        candidates=tuple(outcomes),
        chosen=chosen,
        runner_up=runner_up,
        tie=bool(level),
        on_tie=on_tie,
        earlier=earlier,
        margin=margin,
        noise=noise,
        probe_steps=config.steps,
        run_steps=run_steps,
        seconds=time.perf_counter() - t0,
        confidence=conf.combine(curve_confidence(result), probes),
    )


def _longer(config: ProbeConfig, escalate: float, run_steps: int | None, probe_fraction: float) -> ProbeConfig:
    """The probe settings with ``escalate`` of the run per probe (of ``run_steps``, or scaled from the first
    probes' length when it was given as ``probe_steps``); always longer than the first probes."""
    steps = round(escalate * run_steps) if run_steps is not None else round(config.steps * escalate / probe_fraction)
    return dataclasses.replace(config, steps=max(config.steps + 1, steps))


def _tied(best: ProbeOutcome, other: ProbeOutcome, metric: Metric, sigmas: float) -> bool:
    """Whether the best probe and another tie by accuracy (:func:`tied`); never by loss, never a diverged one."""
    if metric != "accuracy" or best.diverged or other.diverged or best.val_accuracy is None:
        return False
    examples = min(best.val_examples, other.val_examples)
    return tied(best.val_accuracy, other.val_accuracy or 0.0, examples, sigmas)


def _resolved(outcomes: Sequence[ProbeOutcome]) -> Metric:
    """``metric="auto"``: accuracy when every probe could measure it, else loss."""
    return "accuracy" if all(o.val_accuracy is not None for o in outcomes) else "loss"


def _judge(
    outcomes: Sequence[ProbeOutcome], chosen: int, runner_up: int | None, metric: Metric, chance: float | None
) -> tuple[float, float, conf.Confidence]:
    """The chosen probe's margin over the runner-up, its standard error, and the probes' confidence (low when
    every probe is at ``chance``, the majority class's share: :func:`superconv.finder.confidence.at_chance`)."""
    margin = noise = math.nan
    if runner_up is not None:
        a, b = outcomes[chosen], outcomes[runner_up]
        if metric == "accuracy":
            margin = float(a.val_accuracy or 0.0) - float(b.val_accuracy or 0.0)
        else:
            margin = b.val_loss - a.val_loss
        noise = paired_noise(a, b, metric)
    probes = conf.from_probes(
        lrs=[o.lr for o in outcomes],
        values=[_value(o, metric) for o in outcomes],
        higher_is_better=metric == "accuracy",
        chosen=chosen,
        runner_up=runner_up,
        noise=noise,
        unit=" pt" if metric == "accuracy" else " loss",
    )
    if chance is not None and _learned_nothing(outcomes, chance):
        probes = conf.learned_nothing(chance)
    return margin, noise, probes


def _learned_nothing(outcomes: Sequence[ProbeOutcome], chance: float | None) -> bool:
    """Whether every probe that finished is at ``chance`` (:func:`superconv.finder.confidence.at_chance`)."""
    finished = [(o.val_accuracy, o.val_examples) for o in outcomes if not o.diverged and o.val_accuracy is not None]
    return chance is not None and bool(finished) and all(conf.at_chance(a, chance, n) for a, n in finished)


def curve_confidence(result: RangeTestResult) -> conf.Confidence:
    """The curve part of the confidence, recomputed from the result's raw curve (a pure function of it)."""
    if not result.lrs:
        return conf.make(0.0, "the range test recorded no point", "run the range test (more iterations)")
    analysis = suggest.analyze(
        result.lrs, result.losses, result.smooth_f, estimator=result.estimator, stopped_early=result.diverged
    )
    return analysis.confidence


def _value(outcome: ProbeOutcome, metric: Metric) -> float:
    if outcome.diverged:
        return math.nan
    if metric == "accuracy":
        return math.nan if outcome.val_accuracy is None else outcome.val_accuracy
    return outcome.val_loss


def _probe_all(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    lrs: Sequence[float],
    train_loader: Iterable[Any],
    val_loader: Iterable[Any],
    val_batches: int,
    config: ProbeConfig,
    device: torch.device,
    snapshot_device: str | torch.device,
) -> tuple[list[ProbeOutcome], float | None]:
    """Run one probe per LR, each from the same state; everything is restored after each (also on error).

    Returns:
        The outcomes, and the share (percent) of the most frequent class among the validation targets (``None``
        unless they are class indices): the accuracy of a model that learned nothing but the majority.
    """
    positions = [_LoaderPosition(train_loader), _LoaderPosition(val_loader)]
    patched_step = "step" in vars(optimizer)
    original_step = vars(optimizer).get("step")
    outcomes: list[ProbeOutcome] = []
    try:
        cache = []
        for batch in val_loader:
            cache.append(to_device(batch, device))
            if len(cache) == val_batches:
                break
        if not cache:
            raise ConfigError("val_loader yielded no batches; pass a loader with at least one batch.")
        for lr in lrs:
            snapshot = Snapshot(model, optimizer, config.grad_scaler, None, torch.device(snapshot_device), None)
            try:
                model.to(device)
                batches = cycle(train_loader, "train_loader")
                outcomes.append(run_probe(model, optimizer, lr, batches, cache, config, lambda b: to_device(b, device)))
            finally:
                snapshot.restore()
                for position in positions:
                    position.restore()
                # OneCycleLR (a torch LRScheduler) wraps optimizer.step in an instance attribute: undo it.
                if patched_step:
                    vars(optimizer)["step"] = original_step
                else:
                    vars(optimizer).pop("step", None)
    finally:
        for position in positions:
            position.restore()
    return outcomes, _majority_share(cache)


def _majority_share(batches: Sequence[Any]) -> float | None:
    """The most frequent class's share (percent) of the batches' targets, when they are class indices."""
    targets = [b[-1] for b in batches if isinstance(b, (tuple, list)) and len(b) >= 2]
    if len(targets) != len(batches) or not all(isinstance(t, torch.Tensor) for t in targets):
        return None
    if any(t.is_floating_point() or t.is_complex() or t.dtype == torch.bool for t in targets):
        return None
    flat = torch.cat([t.reshape(-1).to("cpu", torch.int64) for t in targets])
    if flat.numel() == 0 or int(flat.min()) < 0:
        return None
    return 100.0 * int(torch.bincount(flat).max()) / flat.numel()


class _LoaderPosition:
    """Where a loader is in its sequence of batches, captured so every probe (and the user) starts there.

    Known kinds: a ``state_dict``/``load_state_dict`` loader (torchdata's StatefulDataLoader), a DataLoader with
    its own ``generator``, and loaders with an ``epoch`` and ``set_epoch`` (superconv's TensorLoader). A
    DataLoader without a generator draws its order from torch's global RNG, which the snapshot restores.
    """

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.kind = ""
        self.state: Any = None
        if callable(getattr(loader, "state_dict", None)) and callable(getattr(loader, "load_state_dict", None)):
            self.kind, self.state = "state_dict", copy.deepcopy(loader.state_dict())
        elif isinstance(getattr(loader, "generator", None), torch.Generator):
            self.kind, self.state = "generator", loader.generator.get_state()
        elif callable(getattr(loader, "set_epoch", None)) and checks.is_int(getattr(loader, "epoch", None)):
            self.kind, self.state = "epoch", loader.epoch

    def restore(self) -> None:
        if self.kind == "state_dict":
            self.loader.load_state_dict(copy.deepcopy(self.state))
        elif self.kind == "generator":
            self.loader.generator.set_state(self.state)
        elif self.kind == "epoch":
            self.loader.set_epoch(self.state)


def _check(
    model: Any,
    optimizer: Any,
    result: Any,
    train_loader: Any,
    val_loader: Any,
    candidates: Sequence[float] | None,
    spacing: float,
    span: tuple[int, int] | None,
    run_steps: int | None,
    probe_fraction: float,
    probe_steps: int | None,
    metric: str,
    on_tie: Any,
    tie_sigmas: Any,
    escalate: Any,
    val_batches: int,
    accumulation_steps: int,
    device: Any,
    autocast_dtype: Any,
    criterion: Any,
    loss_fn: Any,
) -> tuple[list[float], int, torch.device]:
    """Validate :func:`verify`'s arguments; return the candidates, the probe length and the device."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"Expected model to be a torch.nn.Module, but got {type(model).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ConfigError(
            f"Expected optimizer to be a torch.optim.Optimizer, but got {type(optimizer).__name__}: pass the "
            "optimizer that trains the model"
        )
    if not isinstance(result, RangeTestResult):
        raise ConfigError(
            f"Expected result to be the RangeTestResult of LRFinder.range_test, but got {type(result).__name__}"
        )
    check_loader(train_loader, "train_loader")
    check_loader(val_loader, "val_loader")
    for name, fn in (("criterion", criterion), ("loss_fn", loss_fn)):
        if fn is not None and not callable(fn):
            raise ConfigError(f"Expected {name} to be callable, but got {fn!r}")
    checks.one_of("metric", metric, METRICS)
    checks.one_of("on_tie", on_tie, ON_TIE)
    if not (checks.is_number(tie_sigmas) and 0 <= tie_sigmas < math.inf):
        raise ConfigError(
            f"Expected tie_sigmas to be a number >= 0 (standard errors; 0: never a tie), but got {tie_sigmas!r}"
        )
    if escalate is not None:
        checks.fraction("escalate", escalate, low_open=True, hint="the longer probes' share of run_steps")
    checks.positive_int("val_batches", val_batches)
    checks.positive_int("accumulation_steps", accumulation_steps)
    if autocast_dtype is not None and autocast_dtype not in (torch.bfloat16, torch.float16):
        raise ConfigError(f"Expected autocast_dtype torch.bfloat16, torch.float16 or None, but got {autocast_dtype!r}")
    lrs = _candidates(result, candidates, spacing, span)
    steps = _probe_steps(run_steps, probe_fraction, probe_steps)
    try:
        dev = torch.device(device) if device is not None else next(iter(model.parameters())).device
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"Expected device to be a torch device such as 'cpu' or 'cuda', but got {device!r}") from exc
    except StopIteration:
        dev = torch.device("cpu")
    return lrs, steps, dev


def _candidates(
    result: RangeTestResult, candidates: Sequence[float] | None, spacing: float, span: tuple[int, int] | None
) -> list[float]:
    if candidates is None:
        lrs = default_candidates(result)  # also: a ConfigError when there is no usable suggestion
        neighbours = candidate_lrs(float(result.suggestion), spacing, span or (1, 0))  # checks spacing and span
        return lrs if span is None else neighbours
    if isinstance(candidates, (str, bytes)) or not isinstance(candidates, Sequence) or not candidates:
        raise ConfigError(f"Expected candidates to be a non-empty list of learning rates, but got {candidates!r}")
    lrs = [checks.positive_float("each candidate", lr, hint="a learning rate") for lr in candidates]
    if len(set(lrs)) != len(lrs):
        raise ConfigError(f"Expected distinct candidates, but got {list(candidates)!r}: each LR is probed once")
    return sorted(lrs)


def _probe_steps(run_steps: int | None, probe_fraction: float, probe_steps: int | None) -> int:
    checks.fraction("probe_fraction", probe_fraction, low_open=True, hint="each probe's share of run_steps")
    if run_steps is not None:
        checks.positive_int("run_steps", run_steps)
    if probe_steps is not None:
        return checks.positive_int("probe_steps", probe_steps, minimum=MIN_PROBE_STEPS)
    if run_steps is None:
        raise ConfigError(
            "Expected run_steps (the optimizer updates of the run the LR is for) or probe_steps, but got neither: "
            f"pass run_steps=epochs * steps_per_epoch (each probe then takes {DEFAULT_PROBE_FRACTION:.0%} of it) "
            "or probe_steps=N"
        )
    return max(MIN_PROBE_STEPS, round(probe_fraction * run_steps))
