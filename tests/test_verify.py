"""Verification of candidate LRs: the known optimum of a quadratic, exact restore (also on error), the choice
rules, the loader positions, the report, and every argument error."""

from __future__ import annotations

import copy
import json
import math
import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from superconv.errors import ConfigError
from superconv.finder.candidates import default_candidates
from superconv.finder.lr_finder import LRFinder
from superconv.finder.probe import ProbeOutcome
from superconv.finder.result import RangeTestResult
from superconv.finder.verify import binomial_noise, candidate_lrs, choose, paired_noise, tie_lr, tied, verify
from superconv.schedule.one_cycle import OneCycleSchedule

# --------------------------------------------------------------------------------------------- helpers


def least_squares(curvatures: list[float], n: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs X with X^T X / n = diag(curvatures), targets X w*, and w*: the MSE is sum_i c_i (w_i - w*_i)^2."""
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(n, len(curvatures), generator=gen, dtype=torch.float64))
    x = math.sqrt(n) * q * torch.tensor(curvatures, dtype=torch.float64).sqrt()
    w_star = torch.randn(len(curvatures), 1, generator=gen, dtype=torch.float64)
    return x, x @ w_star, w_star


def one_cycle_final_loss(lr: float, steps: int, curvatures: list[float], error0: np.ndarray) -> float:
    """Full-batch gradient descent on sum_i c_i e_i^2 with the one-cycle LR: e_i <- (1 - 2 lr_t c_i) e_i."""
    schedule = OneCycleSchedule(max_lr=lr, total_steps=steps, div_factor=25.0, cycle_momentum=False)
    c = np.asarray(curvatures)
    e = error0.copy()
    for t in range(steps):
        e = e * (1.0 - 2.0 * schedule.lr(t) * c)
    return float(np.sum(c * e**2))


def fake_result(suggestion: float, div_factor: float = 25.0) -> RangeTestResult:
    """A range-test result whose curve is clean (descends, then explodes) with the minimum near ``suggestion``."""
    lrs = np.logspace(math.log10(suggestion) - 4, math.log10(suggestion) + 1.5, 80)
    x = np.log10(lrs / suggestion)
    losses = 1.3 - np.tanh(1.5 * (x + 1.5)) + np.where(x > 0.2, 5 * (10**x - 10**0.2), 0.0)
    return RangeTestResult(lrs=lrs.tolist(), losses=losses.tolist(), smoothed_losses=losses.tolist(),
                           suggestion=suggestion, div_factor=div_factor)  # fmt: skip


def classification(seed: int = 0) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], nn.Module]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(96, 6, generator=gen)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    data = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 96, 16)]
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))
    return data, model


def state_of(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, object]:
    """Everything verification must leave untouched, as comparable plain values and clones."""
    return {
        "tensors": [t.detach().clone() for t in [*model.parameters(), *model.buffers()]],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "modes": [m.training for m in model.modules()],
        "optimizer": copy.deepcopy(optimizer.state_dict()),  # state_dict() holds the live tensors
        "opt_attrs": set(vars(optimizer)),
        "torch_rng": torch.get_rng_state(),
        "random": random.getstate(),
        "numpy": np.random.get_state()[1].copy(),
    }


def assert_same_state(before: dict[str, object], model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    after = state_of(model, optimizer)
    for a, b in zip(before["tensors"], after["tensors"]):  # type: ignore[call-overload]
        assert torch.equal(a, b)
    for a, b in zip(before["grads"], after["grads"]):  # type: ignore[call-overload]
        assert (a is None and b is None) or torch.equal(a, b)
    assert before["modes"] == after["modes"]
    opt_a, opt_b = before["optimizer"], after["optimizer"]
    assert opt_a["param_groups"] == opt_b["param_groups"]  # type: ignore[index]
    assert opt_a["state"].keys() == opt_b["state"].keys()  # type: ignore[index]
    for key, st in opt_a["state"].items():  # type: ignore[index]
        for name, value in st.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(opt_b["state"][key][name]))  # type: ignore[index]
    assert before["opt_attrs"] == after["opt_attrs"]  # no scheduler wrapper (optimizer.step) left behind
    assert torch.equal(before["torch_rng"], after["torch_rng"])  # type: ignore[arg-type]
    assert before["random"] == after["random"]
    assert np.array_equal(before["numpy"], after["numpy"])  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- the known optimum


@pytest.mark.parametrize("metric_steps", [12, 30])
def test_verification_picks_the_best_lr_of_a_quadratic_with_known_curvature(metric_steps: int) -> None:
    curvatures = [1.0, 0.3, 0.05, 0.01]
    x, y, w_star = least_squares(curvatures)
    model = nn.Linear(4, 1, bias=False).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)  # no momentum: plain gradient descent
    data = [(x, y)]
    candidates = [0.06, 0.18, 0.54, 1.62, 4.86]
    error0 = (model.weight.detach().T - w_star).squeeze(1).numpy()
    expected = [one_cycle_final_loss(lr, metric_steps, curvatures, error0) for lr in candidates]

    check = verify(model, optimizer, fake_result(0.18), data, data, criterion=nn.MSELoss(), candidates=candidates,
                   probe_steps=metric_steps)  # fmt: skip

    best = int(np.argmin(expected))
    assert 0 < best < len(candidates) - 1  # the optimum is inside the candidates, not at an edge
    assert check.lr == candidates[best]
    measured = [c.val_loss if not c.diverged else math.inf for c in check.candidates]
    finite = [i for i, v in enumerate(expected) if v < 1e6]
    np.testing.assert_allclose([measured[i] for i in finite], [expected[i] for i in finite], rtol=1e-6)
    assert check.candidates[-1].diverged or measured[-1] > 10 * measured[best]  # 4.86 > 1/c_max: unstable


def test_default_candidates_move_a_suggestion_that_is_3x_too_low_to_the_optimum() -> None:
    curvatures = [1.0, 0.3, 0.05, 0.01]
    x, y, w_star = least_squares(curvatures)
    model = nn.Linear(4, 1, bias=False).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    error0 = (model.weight.detach().T - w_star).squeeze(1).numpy()
    suggestion = 0.06
    lrs = candidate_lrs(suggestion, 3.0, (1, 1))
    expected = [one_cycle_final_loss(lr, 20, curvatures, error0) for lr in lrs]
    assert int(np.argmin(expected)) == 2  # the best of suggestion/3, suggestion, 3 * suggestion is the largest

    data = [(x, y)]
    check = verify(model, optimizer, fake_result(suggestion), data, data, criterion=nn.MSELoss(), probe_steps=20,
                   span=(1, 1))  # fmt: skip
    assert check.lr == pytest.approx(3 * suggestion)
    assert check.suggestion == suggestion and check.chosen == 2 and check.runner_up == 1
    assert check.margin == pytest.approx(expected[1] - expected[2], rel=1e-6)
    # the best candidate is the highest one: the confidence says the best LR may lie beyond it
    assert "may lie beyond" in check.confidence.reason


# --------------------------------------------------------------------------------------------- exact restore


def test_everything_is_restored_bit_exactly() -> None:
    data, model = classification()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    crit = nn.CrossEntropyLoss()
    crit(model(data[0][0]), data[0][1]).backward()
    optimizer.step()  # a non-empty state (exp_avg, step) and gradients left in place
    model.eval()  # a mode the probes must not keep
    random.seed(3)
    np.random.seed(4)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    scaler_state = scaler.state_dict()
    loader = DataLoader(TensorDataset(torch.cat([b[0] for b in data]), torch.cat([b[1] for b in data])),
                        batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(5))  # fmt: skip
    loader_state = loader.generator.get_state()
    before = state_of(model, optimizer)

    check = verify(model, optimizer, fake_result(0.01), loader, data[:2], criterion=crit, probe_steps=10,
                   grad_scaler=scaler, metric="accuracy")  # fmt: skip

    assert_same_state(before, model, optimizer)
    assert scaler.state_dict() == scaler_state
    assert torch.equal(loader.generator.get_state(), loader_state)
    assert len(check.candidates) == 2 and all(c.updates == 10 for c in check.candidates)


def test_everything_is_restored_when_a_probe_raises() -> None:
    data, model = classification()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    crit = nn.CrossEntropyLoss()
    crit(model(data[0][0]), data[0][1]).backward()
    optimizer.step()
    before = state_of(model, optimizer)
    calls = {"n": 0}

    def loss_fn(m: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 15:  # in the middle of the second probe
            raise RuntimeError("boom")
        return crit(m(batch[0]), batch[1])

    with pytest.raises(RuntimeError, match="boom"):
        verify(model, optimizer, fake_result(0.05), data, data[:2], loss_fn=loss_fn, probe_steps=10)
    assert_same_state(before, model, optimizer)


def test_every_probe_starts_from_the_same_state_so_verification_is_repeatable() -> None:
    data, model = classification()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    crit = nn.CrossEntropyLoss()
    first = verify(model, optimizer, fake_result(0.1), data, data[:3], criterion=crit, probe_steps=12)
    second = verify(model, optimizer, fake_result(0.1), data, data[:3], criterion=crit, probe_steps=12)
    assert [c.val_loss for c in first.candidates] == [c.val_loss for c in second.candidates]
    # dropout draws the same masks in every probe: a probe alone gives the same loss as inside the set
    alone = verify(model, optimizer, fake_result(0.1), data, data[:3], criterion=crit, probe_steps=12,
                   candidates=[first.candidates[1].lr])  # fmt: skip
    assert alone.candidates[0].val_loss == first.candidates[1].val_loss


def test_a_tensor_loader_starts_every_probe_at_its_epoch_and_is_left_there() -> None:
    from superconv.data.loaders import TensorLoader

    images = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8)
    labels = torch.randint(0, 3, (64,))
    loader = TensorLoader(images, labels, batch_size=16, mean=[0.5], std=[0.25], shuffle=True, drop_last=True)
    loader.set_epoch(2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    val = TensorLoader(images, labels, batch_size=32, mean=[0.5], std=[0.25])
    first = verify(model, optimizer, fake_result(0.1), loader, val, criterion=nn.CrossEntropyLoss(), probe_steps=10)
    assert loader.epoch == 2 and val.epoch == 0
    again = verify(model, optimizer, fake_result(0.1), loader, val, criterion=nn.CrossEntropyLoss(), probe_steps=10,
                   candidates=[first.candidates[0].lr])  # fmt: skip
    assert again.candidates[0].train_loss == first.candidates[0].train_loss


# --------------------------------------------------------------------------------------------- choice and report


def outcome(lr: float, loss: float, acc: float | None = None, diverged: bool = False,
            batches: list[float] | None = None) -> ProbeOutcome:  # fmt: skip
    per = batches or [loss]
    return ProbeOutcome(lr, loss, acc, per, [acc] * len(per) if acc is not None else [], loss, 10, diverged, 0.1)


def test_choose_by_loss_by_accuracy_ties_and_divergence() -> None:
    outs = [outcome(0.01, 0.50, 80.0), outcome(0.03, 0.40, 85.0), outcome(0.1, 0.45, 85.0), outcome(0.3, 9, 10, True)]
    assert choose(outs, "loss") == (1, 2)
    assert choose(outs, "accuracy") == (1, 2)  # a tie at 85% is broken by the lower loss
    assert choose([outcome(0.1, math.nan, diverged=True), outcome(0.03, math.nan, diverged=True)], "loss") == (1, None)


def test_a_tie_is_a_lead_within_the_binomial_noise_and_each_rule_settles_it() -> None:
    noise = binomial_noise(90.0, 89.0, 400)  # about 2.2 points on 400 examples
    assert noise == pytest.approx(100 * math.sqrt((0.9 * 0.1 + 0.89 * 0.11) / 400))
    assert tied(90.0, 89.0, 400, sigmas=1.0)  # 1 pt < 2.2
    assert not tied(90.0, 89.0, 400, sigmas=0.0)  # 0: never a tie
    assert not tied(90.0, 89.0, 40000, sigmas=1.0)  # 1 pt >> 0.2 pt of noise
    assert not tied(95.0, 80.0, 400, sigmas=2.0)  # far ahead
    assert not tied(90.0, 89.0, 0, sigmas=1.0)  # no count, no noise estimate
    assert tied(100.0, 100.0, 50, sigmas=1.0)  # an exact tie (zero noise)
    assert math.isnan(binomial_noise(50.0, 50.0, 0))
    assert tie_lr([0.09, 0.01], suggestion=0.012, on_tie="suggestion") == 0.01  # nearer the suggestion, in log
    assert tie_lr([0.09, 0.01], suggestion=0.05, on_tie="suggestion") == 0.09
    assert tie_lr([0.09, 0.01, 0.03], suggestion=0.025, on_tie="suggestion") == 0.03  # every tied LR counts
    assert tie_lr([0.09, 0.01], suggestion=0.05, on_tie="between") == pytest.approx(0.03)
    assert tie_lr([0.09, 0.01], suggestion=0.012, on_tie="best") == 0.09
    assert tie_lr([0.09, 0.01], suggestion=math.nan, on_tie="suggestion") == 0.09  # no suggestion: the best


def _separable() -> tuple[list[tuple[torch.Tensor, torch.Tensor]], nn.Module, torch.optim.Optimizer]:
    """Two well-separated classes: every candidate reaches 100% validation accuracy, so the probes tie exactly."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(128, 2, generator=gen)
    y = (x[:, 0] > 0).long()
    x[:, 0] += torch.where(y == 1, 4.0, -4.0)
    data = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 128, 32)]
    model = nn.Linear(2, 2)
    return data, model, torch.optim.SGD(model.parameters(), lr=0.1)


@pytest.mark.parametrize(("on_tie", "expected"), [("suggestion", 0.05), ("between", 0.15)])
def test_a_tie_in_the_probes_trains_where_on_tie_says(on_tie: str, expected: float) -> None:
    data, model, optimizer = _separable()
    crit = nn.CrossEntropyLoss()
    check = verify(model, optimizer, fake_result(0.06), data, data, criterion=crit, candidates=[0.05, 0.45],
                   probe_steps=20, metric="accuracy", on_tie=on_tie)  # type: ignore[arg-type]  # fmt: skip
    assert [c.val_accuracy for c in check.candidates] == [100.0, 100.0]
    assert [c.val_examples for c in check.candidates] == [128, 128]
    assert check.tie and check.lr == pytest.approx(expected)  # 0.05 is nearer the suggestion 0.06; 0.15 between
    text = check.margin_text()
    assert text.startswith(f"{check.lr:.2g}: the probes tie (") and "pt apart in probes, within noise); " in text
    assert text.endswith({"suggestion": "nearer the range test's suggestion", "between": "geometric mean"}[on_tie])
    assert check.to_dict()["tie"] is True and check.one_cycle_kwargs()["max_lr"] == pytest.approx(expected)


def test_without_a_tie_rule_the_best_probe_is_kept() -> None:
    data, model, optimizer = _separable()
    crit = nn.CrossEntropyLoss()
    kwargs = {"candidates": [0.05, 0.45], "probe_steps": 20, "criterion": crit}
    best = verify(model, optimizer, fake_result(0.06), data, data, metric="accuracy", on_tie="best", **kwargs)
    never = verify(model, optimizer, fake_result(0.06), data, data, metric="accuracy", tie_sigmas=0, **kwargs)
    by_loss = verify(model, optimizer, fake_result(0.06), data, data, metric="loss", **kwargs)
    assert best.tie and best.lr in (0.05, 0.45) and best.lr == best.candidates[best.chosen].lr
    assert not never.tie and never.lr == never.candidates[never.chosen].lr
    assert not by_loss.tie and by_loss.lr == by_loss.candidates[by_loss.chosen].lr  # a loss has no binomial noise


def test_probes_that_learned_nothing_say_so_and_what_to_do() -> None:
    # labels unrelated to the inputs (half of them class 0): no probe can beat predicting the majority class
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(384, 6, generator=gen)
    y = torch.tensor([0] * 192 + [1] * 96 + [2] * 96)[torch.randperm(384, generator=gen)]
    train, val = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 192, 32)], [(x[192:], y[192:])]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    check = verify(model, optimizer, fake_result(0.1), train, val, criterion=nn.CrossEntropyLoss(), probe_steps=12)
    assert check.metric == "loss" and all(c.val_accuracy is not None for c in check.candidates)  # measured anyway
    share = 100.0 * int(torch.bincount(y[192:]).max()) / 192
    assert all(c.val_accuracy <= share + 8 for c in check.candidates if c.val_accuracy is not None)
    assert check.confidence.level == "low"
    assert "the probes learned nothing yet" in check.confidence.reason and f"({share:.3g}%)" in check.confidence.reason
    assert "train a few LRs in full" in check.confidence.advice and "escalate=0.3" in check.confidence.advice
    # a task the probes do learn is not flagged
    data, learnable = classification()
    fine = verify(learnable, torch.optim.SGD(learnable.parameters(), lr=0.1, momentum=0.9), fake_result(0.3), data,
                  data[:4], criterion=nn.CrossEntropyLoss(), probe_steps=30)  # fmt: skip
    assert "learned nothing" not in fine.confidence.reason


def test_probes_that_learned_nothing_are_run_again_longer_when_asked() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(384, 6, generator=gen)
    y = torch.tensor([0] * 192 + [1] * 96 + [2] * 96)[torch.randperm(384, generator=gen)]  # unrelated to x
    train, val = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 192, 32)], [(x[192:], y[192:])]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = state_of(model, optimizer)
    check = verify(model, optimizer, fake_result(0.1), train, val, criterion=nn.CrossEntropyLoss(), run_steps=200,
                   escalate=0.3)  # fmt: skip
    assert_same_state(before, model, optimizer)
    assert [c.updates for c in check.earlier] == [15] * len(check.candidates)  # 7.5% of 200, at chance
    assert check.probe_steps == 60 and all(c.updates == 60 for c in check.candidates)  # then 30% of 200
    assert check.cost_fraction == pytest.approx(len(check.candidates) * 75 / 200)
    assert "probes of 15 updates learned nothing, then" in check.summary()
    assert len(check.to_dict()["earlier"]) == len(check.candidates)
    # the default does not escalate, and probes that learn are never run again
    assert (
        verify(model, optimizer, fake_result(0.1), train, val, criterion=nn.CrossEntropyLoss(), run_steps=200).earlier
        == ()
    )
    data, learnable = classification()
    fine = verify(learnable, torch.optim.SGD(learnable.parameters(), lr=0.1, momentum=0.9), fake_result(0.3), data,
                  data[:4], criterion=nn.CrossEntropyLoss(), run_steps=400, escalate=0.3)  # fmt: skip
    assert fine.earlier == () and fine.probe_steps == 30


def test_paired_noise_is_the_standard_error_of_the_batch_differences() -> None:
    a = outcome(0.01, 1.0, batches=[1.0, 2.0, 3.0])
    b = outcome(0.03, 1.0, batches=[1.5, 2.0, 2.5])
    assert paired_noise(a, b, "loss") == pytest.approx(np.std([-0.5, 0.0, 0.5], ddof=1) / math.sqrt(3))
    assert math.isnan(paired_noise(outcome(0.1, 1.0), outcome(0.2, 2.0), "loss"))


def test_a_diverging_candidate_is_never_chosen_and_all_diverging_is_low_confidence() -> None:
    data, model = classification()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    crit = nn.CrossEntropyLoss()
    check = verify(model, optimizer, fake_result(0.1), data, data[:2], criterion=crit, probe_steps=10,
                   candidates=[0.03, 0.1, 1e12])  # fmt: skip
    assert check.candidates[-1].diverged and not math.isfinite(check.candidates[-1].val_loss)
    assert check.lr in (0.03, 0.1)
    worst = verify(model, optimizer, fake_result(0.1), data, data[:2], criterion=crit, probe_steps=10,
                   candidates=[1e12, 1e14])  # fmt: skip
    assert worst.lr == 1e12 and worst.runner_up is None
    assert worst.confidence.level == "low" and "every probe diverged" in worst.confidence.reason


def test_summary_and_plain_data() -> None:
    data, model = classification()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    check = verify(model, optimizer, fake_result(0.1), data, data[:4], criterion=nn.CrossEntropyLoss(),
                   run_steps=200, metric="accuracy")  # fmt: skip
    assert check.probe_steps == 15 and check.cost_fraction == pytest.approx(30 / 200)  # 7.5% of the run each
    line = check.summary()
    assert line.startswith(f"verified max_lr={check.lr:.2g}: ") and "in probes" in line and "confidence" in line
    if check.runner_up is not None:
        assert ("pt ahead of" in check.margin_text()) != check.tie
        assert ("the probes tie" in check.margin_text()) == check.tie
    data_out = json.loads(json.dumps(check.to_dict()))
    assert data_out["lr"] == check.lr and len(data_out["candidates"]) == 2
    # the default: the geometric mean of the curve's steepest point and the suggestion, and the suggestion
    assert [c.lr for c in check.candidates] == pytest.approx(default_candidates(fake_result(0.1)))
    assert check.one_cycle_kwargs() == {"max_lr": check.lr, "div_factor": 25.0}


def test_verify_after_a_real_range_test() -> None:
    data, model = classification()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    crit = nn.CrossEntropyLoss()
    result = LRFinder(model, optimizer, crit).range_test(data, num_iter=40, progress=False)
    check = verify(model, optimizer, result, data, data[:2], criterion=crit, probe_steps=10)
    assert [c.lr for c in check.candidates] == pytest.approx(default_candidates(result))
    assert check.confidence.level in ("high", "medium", "low") and 0.0 <= check.confidence.score <= 1.0


# --------------------------------------------------------------------------------------------- argument errors


def _call(**overrides: object) -> None:
    data, model = classification()
    kwargs: dict[str, object] = {
        "model": model,
        "optimizer": torch.optim.SGD(model.parameters(), lr=0.1),
        "result": fake_result(0.1),
        "train_loader": data,
        "val_loader": data[:2],
        "criterion": nn.CrossEntropyLoss(),
        "probe_steps": 10,
    }
    kwargs.update(overrides)
    verify(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model": "net"}, "Expected model to be a torch.nn.Module, but got str"),
        ({"optimizer": None}, "Expected optimizer to be a torch.optim.Optimizer, but got NoneType"),
        ({"result": 0.1}, "Expected result to be the RangeTestResult of LRFinder.range_test, but got float"),
        ({"train_loader": 3}, "`train_loader` has unsupported type: int"),
        ({"val_loader": []}, "val_loader is empty"),
        ({"criterion": 3}, "Expected criterion to be callable, but got 3"),
        ({"metric": "f1"}, "Unknown metric 'f1': expected one of loss, accuracy"),
        ({"val_batches": 0}, "Expected val_batches to be a positive integer, but got 0"),
        ({"tie_sigmas": -1}, r"Expected tie_sigmas to be a number >= 0 \(standard errors; 0: never a tie\)"),
        ({"tie_sigmas": math.inf}, "Expected tie_sigmas to be a number >= 0"),
        ({"tie_sigmas": "1"}, "Expected tie_sigmas to be a number >= 0"),
        ({"on_tie": "median"}, "Unknown on_tie 'median': expected one of suggestion, between, best"),
        ({"escalate": 1.5}, r"Expected escalate in \(0, 1\)"),
        ({"accumulation_steps": 0}, "Expected accumulation_steps to be a positive integer, but got 0"),
        ({"autocast_dtype": torch.float32}, "Expected autocast_dtype torch.bfloat16, torch.float16 or None"),
        ({"probe_steps": 5}, "Expected probe_steps to be an integer >= 10, but got 5"),
        ({"probe_steps": None}, "Expected run_steps .* or probe_steps, but got neither"),
        ({"probe_steps": None, "run_steps": 0}, "Expected run_steps to be a positive integer, but got 0"),
        ({"probe_fraction": 1.5}, r"Expected probe_fraction in \(0, 1\) .* but got 1.5"),
        ({"candidates": []}, "Expected candidates to be a non-empty list of learning rates, but got"),
        ({"candidates": [0.1, -1.0]}, "Expected each candidate to be a positive, finite number"),
        ({"candidates": [0.1, 0.1]}, "Expected distinct candidates, but got"),
        ({"spacing": 1.0}, "Expected spacing to be a number > 1"),
        ({"device": "gpu:x"}, "Expected device to be a torch device such as 'cpu' or 'cuda', but got 'gpu:x'"),
        ({"result": RangeTestResult(lrs=[], losses=[], smoothed_losses=[], suggestion=math.nan)},
         "The range test gave no usable suggestion"),
    ],
)  # fmt: skip
def test_argument_errors(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _call(**overrides)


def test_accuracy_needs_class_index_targets() -> None:
    x = torch.randn(32, 3)
    data = [(x, x.sum(1, keepdim=True))]
    model = nn.Linear(3, 1)
    with pytest.raises(ConfigError, match=r"metric='accuracy' needs .* use metric='loss' for any other task"):
        verify(model, torch.optim.SGD(model.parameters(), lr=0.1), fake_result(0.1), data, data,
               criterion=nn.MSELoss(), probe_steps=10, metric="accuracy")  # fmt: skip


def test_a_loss_that_is_not_a_scalar_is_explained() -> None:
    _, model = classification()
    with pytest.raises(ConfigError, match="the loss must be a scalar tensor"):
        _call(model=model, criterion=nn.CrossEntropyLoss(reduction="none"))


# --------------------------------------------------------------------------------------------- precision, devices


def test_bf16_autocast_with_accumulation_runs_and_restores() -> None:
    data, model = classification()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = state_of(model, optimizer)
    check = verify(model, optimizer, fake_result(0.01), data, data[:2], criterion=nn.CrossEntropyLoss(),
                   probe_steps=10, autocast_dtype=torch.bfloat16, accumulation_steps=2)  # fmt: skip
    assert all(c.updates == 10 and math.isfinite(c.val_loss) for c in check.candidates)
    assert_same_state(before, model, optimizer)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fp16_grad_scaler_on_cuda_restores_model_optimizer_scaler_and_device() -> None:
    data, model = classification()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**12)
    scaler_state = scaler.state_dict()
    before = state_of(model, optimizer)
    check = verify(model, optimizer, fake_result(0.1), data, data[:2], criterion=nn.CrossEntropyLoss(),
                   probe_steps=10, device="cuda", autocast_dtype=torch.float16, grad_scaler=scaler)  # fmt: skip
    assert len(check.candidates) == 2
    assert all(p.device.type == "cpu" for p in model.parameters())  # moved there and back
    assert scaler.state_dict() == scaler_state
    assert_same_state(before, model, optimizer)


# --------------------------------------------------------------------------------------------- defaults, LRFinder


def test_auto_metric_is_accuracy_for_class_indices_and_loss_otherwise() -> None:
    data, model = classification()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    check = verify(model, optimizer, fake_result(0.1), data, data[:2], criterion=nn.CrossEntropyLoss(), probe_steps=10,
                   metric="auto")  # fmt: skip
    assert check.metric == "accuracy" and all(c.val_accuracy is not None for c in check.candidates)
    default = verify(model, optimizer, fake_result(0.1), data, data[:2], criterion=nn.CrossEntropyLoss(),
                     probe_steps=10)  # fmt: skip
    assert default.metric == "loss"  # the default (chosen on the benchmark's development workloads)
    x, y, _ = least_squares([1.0, 0.1])
    reg = nn.Linear(2, 1, bias=False).double()
    check = verify(reg, torch.optim.SGD(reg.parameters(), lr=0.1), fake_result(0.1), [(x, y)], [(x, y)],
                   criterion=nn.MSELoss(), probe_steps=10, metric="auto")  # fmt: skip
    assert check.metric == "loss" and all(c.val_accuracy is None for c in check.candidates)
    assert "val loss" in check.margin_text() or check.runner_up is None


def test_lr_finder_verify_uses_the_finders_parts_and_restores_them() -> None:
    data, model = classification()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    finder = LRFinder(model, optimizer, nn.CrossEntropyLoss())
    with pytest.raises(ConfigError, match=r"LRFinder.verify needs the range test's curve.*call range_test\(\.\.\.\)"):
        finder.verify(data, data[:2], run_steps=200)
    result = finder.range_test(data, num_iter=40, progress=False)
    before = state_of(model, optimizer)
    check = finder.verify(data, data[:2], run_steps=200)
    assert_same_state(before, model, optimizer)
    assert [c.lr for c in check.candidates] == pytest.approx(default_candidates(result))
    assert check.probe_steps == 15 and check.run_steps == 200 and check.suggestion == result.suggestion
    # the same call through the function gives the same probes (the finder only supplies its parts)
    direct = verify(model, optimizer, result, data, data[:2], criterion=nn.CrossEntropyLoss(), run_steps=200)
    assert [c.val_loss for c in direct.candidates] == [c.val_loss for c in check.candidates]
