"""How sure a suggestion is: a level ("high", "medium", "low"), a score in [0, 1], a reason and what to do.

Two sources of evidence, each a pure function of numbers:

* :func:`from_curve` - the range test's curve alone: its quality flag, its noise against the depth of the
  descent, how many points the descent spans, and whether the loss was still falling at the end of the sweep.
* :func:`from_probes` - the verification probes (:mod:`superconv.finder.verify`): the margin between the best
  candidate and the runner-up against the noise of that difference on the validation batches, whether the
  best candidate sits at the edge of the candidates (the best LR may lie beyond), and diverged probes.

:func:`combine` weighs the probes above the curve: they measure the quantity the user cares about (a short
run's validation metric) where the curve only hints at it.

Example:
    >>> c = from_curve(quality="ok", warning="", noise_ratio=0.02, descent_points=40, min_at_end=False)
    >>> c.level, c.reason
    ('high', 'a clean descent and a clear minimum')
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

Level = Literal["high", "medium", "low"]

#: Scores at or above these are "high" and "medium"; below ``MEDIUM`` they are "low".
HIGH, MEDIUM = 0.7, 0.4
#: A descent that spans fewer points than this is read with a coarse resolution.
MIN_DESCENT_POINTS = 8
#: Noise over depth at which the curve's score is halved (the "noisy" flag is raised at 0.25).
NOISE_HALF = 0.25
#: The weight of the probes in :func:`combine` (the curve's is the rest).
PROBE_WEIGHT = 0.75


@dataclass(frozen=True)
class Confidence:
    """How sure a suggestion is.

    Attributes:
        level: "high", "medium" or "low" (from ``score``: :data:`HIGH`, :data:`MEDIUM`).
        score: In [0, 1]; higher is surer.
        reason: Why, in one sentence.
        advice: What to do to be surer; "" when there is nothing to do.
    """

    level: Level
    score: float
    reason: str
    advice: str = ""

    def summary(self) -> str:
        """One line, e.g. ``confidence low (0.20): the loss hardly changed; widen the sweep``."""
        text = f"confidence {self.level} ({self.score:.2f}): {self.reason}"
        return f"{text}; {self.advice}" if self.advice else text

    def to_dict(self) -> dict[str, Any]:
        """Plain data (strings and a float)."""
        return asdict(self)


def level_of(score: float) -> Level:
    """The level of a score: "high" from :data:`HIGH`, "medium" from :data:`MEDIUM`, else "low"."""
    if score >= HIGH:
        return "high"
    return "medium" if score >= MEDIUM else "low"


def make(score: float, reason: str, advice: str = "") -> Confidence:
    """A :class:`Confidence` with the score clipped to [0, 1] and its level."""
    score = float(min(1.0, max(0.0, score))) if math.isfinite(score) else 0.0
    return Confidence(level_of(score), round(score, 3), reason, advice)


def from_curve(
    *,
    quality: str,
    warning: str,
    noise_ratio: float,
    descent_points: int,
    min_at_end: bool,
) -> Confidence:
    """The confidence the curve alone supports.

    Args:
        quality: The curve's quality flag (:data:`superconv.finder.suggest.Quality`).
        warning: The sentence that goes with a flag other than "ok".
        noise_ratio: The raw losses' noise over the depth of the descent.
        descent_points: Points from where the descent starts to the minimum.
        min_at_end: Whether the minimum is at the end of a sweep that did not diverge (still falling).

    Returns:
        A :class:`Confidence`; "low" for a flagged curve, with the flag's advice.

    Example:
        >>> from_curve(quality="flat", warning="the loss hardly changed", noise_ratio=math.nan,
        ...            descent_points=0, min_at_end=False).level
        'low'
    """
    if quality != "ok":
        reason, _, advice = warning.partition(": ")
        return make(0.35 if quality == "noisy" else 0.15, f"the curve is {quality} ({reason})", advice)
    factors: list[tuple[float, str, str]] = []
    if math.isfinite(noise_ratio):
        noise_factor = 1.0 - 0.5 * min(1.0, noise_ratio / NOISE_HALF) ** 2
        factors.append(
            (
                noise_factor,
                f"the loss noise is {noise_ratio:.0%} of the descent",
                "use a larger batch or more iterations (num_iter) for the sweep",
            )
        )
    if descent_points < MIN_DESCENT_POINTS:
        factors.append(
            (
                0.6,
                f"the descent spans only {descent_points} points",
                "run more iterations (num_iter) so the descent is resolved",
            )
        )
    if min_at_end:
        factors.append(
            (
                0.5,
                "the loss was still falling at the end of the sweep",
                "widen the sweep (end_lr higher) so it reaches the divergence",
            )
        )
    score = math.prod(f for f, _, _ in factors)
    weakest = min(factors, key=lambda f: f[0], default=None)
    if weakest is None or weakest[0] >= 0.95:
        return make(score, "a clean descent and a clear minimum")
    return make(score, weakest[1], weakest[2] if score < HIGH else "")


def from_probes(
    *,
    lrs: Sequence[float],
    values: Sequence[float],
    higher_is_better: bool,
    chosen: int,
    runner_up: int | None,
    noise: float,
    unit: str,
) -> Confidence:
    """The confidence the verification probes support.

    Args:
        lrs: The candidates' learning rates (any order).
        values: Each candidate's validation metric (NaN for a probe that diverged).
        higher_is_better: True for accuracy, False for loss.
        chosen: The index of the chosen candidate.
        runner_up: The index of the next best finite candidate, or ``None``.
        noise: The standard error of the chosen-minus-runner-up difference (NaN when unknown).
        unit: How to write a difference of ``values`` (e.g. " pt" or " loss").

    Returns:
        A :class:`Confidence`.

    Example:
        >>> from_probes(lrs=[0.01, 0.03, 0.1], values=[80.0, 85.0, 81.0], higher_is_better=True, chosen=1,
        ...             runner_up=2, noise=0.8, unit=" pt").level
        'high'
    """
    finite = [i for i, v in enumerate(values) if math.isfinite(v)]
    if not finite:
        return make(
            0.05,
            "every probe diverged",
            "run the range test again from a lower start_lr, or check the model and the data",
        )
    if runner_up is None:
        return make(0.3, "only one probe finished", "verify with more candidates (or a lower spacing)")
    margin = abs(values[chosen] - values[runner_up])
    z = margin / noise if math.isfinite(noise) and noise > 0 else math.nan
    order = sorted(range(len(lrs)), key=lambda i: lrs[i])
    at_edge = chosen in (order[0], order[-1]) and len(lrs) > 1
    ahead = f"{margin:.3g}{unit} ahead of {lrs[runner_up]:.2g}"
    if not math.isfinite(z):
        score, reason = 0.55, f"{ahead}, with no noise estimate (one validation batch)"
        advice = "use val_batches >= 4 to measure the noise"
    elif z >= 2.0:
        score, reason, advice = 0.9, f"{ahead}, {z:.1f} standard errors", ""
    elif z >= 1.0:
        score, reason, advice = 0.7, f"{ahead}, {z:.1f} standard errors", ""
    else:
        score, reason = 0.55, f"{ahead}, within the noise ({z:.1f} standard errors): either LR is fine"
        advice = "more validation batches (val_batches) would separate them"
    if at_edge:
        side = "highest" if chosen == order[-1] else "lowest"
        score *= 0.7
        reason += f"; the best probe is the {side} candidate, so the best LR may lie beyond it"
        advice = "verify again with candidates further out (candidates=...)"
    return make(score, reason, advice)


def at_chance(accuracy: float, chance: float, examples: int) -> bool:
    """Whether a probe's validation ``accuracy`` (percent, on ``examples`` predictions) is no better than
    predicting the majority class (``chance``, its share in percent): within two binomial standard errors of it.

    Example:
        >>> at_chance(34.0, chance=33.0, examples=600), at_chance(45.0, chance=33.0, examples=600)
        (True, False)
    """
    if examples < 1 or not math.isfinite(accuracy):
        return False
    c = chance / 100.0
    return accuracy <= chance + 2.0 * 100.0 * math.sqrt(max(c * (1.0 - c), 1e-12) / examples)


def learned_nothing(chance: float) -> Confidence:
    """The probes' confidence when every probe is at chance (:func:`at_chance`): they cannot choose.

    On the suggestion benchmark's sequence tasks, which a run only learns late, even probes of 15% of the run sat at
    chance over the whole good LR range, and the verified LR was then a coin toss (``benchmarks/results/``).
    """
    return make(
        0.1,
        f"every probe's validation accuracy is at the majority class's share ({chance:.3g}%): the probes learned "
        "nothing yet, so none can choose",
        "this task learns only later in a run, which short probes cannot see: train a few LRs in full (half a decade "
        "apart) and keep the best by validation; longer probes (escalate=0.3) helped on some such tasks, hurt on "
        "others",
    )


def combine(curve: Confidence, probes: Confidence) -> Confidence:
    """The confidence of a verified suggestion: the probes weighed at :data:`PROBE_WEIGHT`, the curve the rest.

    Example:
        >>> combine(make(1.0, "clean curve"), make(0.5, "close call", "more val batches")).level
        'medium'
    """
    score = PROBE_WEIGHT * probes.score + (1.0 - PROBE_WEIGHT) * curve.score
    reason = f"probes: {probes.reason}; curve: {curve.reason}"
    return make(score, reason, probes.advice or curve.advice)
