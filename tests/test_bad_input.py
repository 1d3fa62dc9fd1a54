"""Bad input, swept: every command and option family with wrong values, and the library's public functions.

Each CLI case runs the real entry point (``superconv.cli.main``) and must exit with status 2 and ONE line on stderr
that starts with ``superconv: error:``, says what was wrong (the fragment given) and shows no traceback; nothing in
an earlier run's folder may change. Each library case must raise the named error with its message.
"""

from __future__ import annotations

import hashlib
import pickle
import warnings
from pathlib import Path

import pytest
import torch

from superconv.cli.main import main

D = ["--dataset", "digits", "--no-progress"]
C = ["--dataset", "digits"]  # compare has no progress bars


def _earlier_run(root: Path) -> Path:
    run = root / "earlier"
    run.mkdir()
    (run / "config.json").write_text('{"options": {}}')
    (run / "metrics.json").write_text('{"test_accuracy": 0.9}')
    (run / "last.pt").write_bytes(b"precious")
    return run


def _fixtures(root: Path) -> dict[str, str]:
    empty = root / "empty"
    empty.mkdir()
    a_file = root / "a_file.txt"
    a_file.write_text("not a folder")
    corrupt = root / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x02 truncated garbage")
    evil = root / "evil.pt"
    evil.write_bytes(pickle.dumps(_Evil()))
    noimages = root / "noimages"
    for cls in ("a", "b"):
        (noimages / "train" / cls).mkdir(parents=True)
        (noimages / "train" / cls / "x.jpg").write_bytes(b"this is not a jpeg")
    return {
        "EMPTY": str(empty), "FILE": str(a_file), "CORRUPT": str(corrupt), "EVIL": str(evil),
        "EARLIER": str(_earlier_run(root)), "NOIMAGES": str(noimages), "MISSING": str(root / "missing"),
    }  # fmt: skip


class _Evil:
    """A pickle that would write a file if it were ever unpickled (weights_only loading must refuse it)."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, ("open('/tmp/superconv-evil-ran', 'w').write('pwned')",))


CASES: list[tuple[str, list[str], str]] = [
    # --- train: names -------------------------------------------------------------------------------------
    ("unknown dataset", ["train", "--dataset", "mnist"], "Invalid value for '--dataset'"),
    ("unknown model", ["train", *D, "--model", "resnet9000"], "Unknown model 'resnet9000'"),
    ("unknown optimizer", ["train", *D, "--optimizer", "adam"], "Invalid value for '--optimizer'"),
    ("unknown schedule", ["train", *D, "--schedule", "linear"], "Invalid value for '--schedule'"),
    ("unknown preset", ["train", *D, "--preset", "smiht"], "Invalid value for '--preset'"),
    ("unknown precision", ["train", *D, "--precision", "fp8"], "Invalid value for '--precision'"),
    ("unknown device", ["train", *D, "--device", "gpu0"], "Unknown device 'gpu0'"),
    ("unavailable device", ["train", *D, "--device", "cuda:7"], "cuda:7"),
    ("fp16 on the CPU", ["train", *D, "--device", "cpu", "--precision", "fp16"], "fp16' needs a GPU"),
    # --- train: numbers -----------------------------------------------------------------------------------
    ("zero epochs", ["train", *D, "--epochs", "0"], "Invalid value for '--epochs'"),
    ("negative epochs", ["train", *D, "--epochs", "-3"], "Invalid value for '--epochs'"),
    ("text epochs", ["train", *D, "--epochs", "many"], "Invalid value for '--epochs'"),
    ("zero batch", ["train", *D, "--batch-size", "0"], "Invalid value for '--batch-size'"),
    ("batch over dataset", ["train", *D, "--batch-size", "100000"], "--batch-size"),
    ("negative max-lr", ["train", *D, "--max-lr", "-0.1"], "Invalid value for '--max-lr'"),
    ("zero max-lr", ["train", *D, "--max-lr", "0"], "Invalid value for '--max-lr'"),
    ("NaN max-lr", ["train", *D, "--max-lr", "nan"], "'nan' is not a finite number"),
    ("infinite max-lr", ["train", *D, "--max-lr", "inf"], "'inf' is not a finite number"),
    ("NaN weight decay", ["train", *D, "--weight-decay", "nan"], "Invalid value for '--weight-decay'"),
    ("negative weight decay", ["train", *D, "--weight-decay", "-1"], "Invalid value for '--weight-decay'"),
    ("val fraction 1.5", ["train", *D, "--val-fraction", "1.5"], "Invalid value for '--val-fraction'"),
    ("val fraction NaN", ["train", *D, "--val-fraction", "nan"], "Invalid value for '--val-fraction'"),
    ("label smoothing 1", ["train", *D, "--label-smoothing", "1"], "Invalid value for '--label-smoothing'"),
    ("EMA decay 1", ["train", *D, "--ema", "1"], "Invalid value for '--ema'"),
    ("EMA and no EMA", ["train", *D, "--ema", "0.9", "--no-ema"], "--ema and --no-ema contradict"),
    ("zero accumulation", ["train", *D, "--accumulation", "0"], "Invalid value for '--accumulation'"),
    ("zero patience", ["train", *D, "--patience", "0"], "Invalid value for '--patience'"),
    ("short range test", ["train", *D, "--range-iters", "5"], "Invalid value for '--range-iters'"),
    ("negative workers", ["train", *D, "--workers", "-1"], "Invalid value for '--workers'"),
    ("zero width", ["train", *D, "--width", "0"], "Invalid value for '--width'"),
    ("tiny image size", ["train", *D, "--image-size", "4"], "Invalid value for '--image-size'"),
    ("zero subset", ["train", *D, "--subset", "0"], "Invalid value for '--subset'"),
    ("subset over dataset", ["train", *D, "--subset", "999999"], "subset=999999 asks for more examples"),
    ("pct-start 1.5", ["train", *D, "--max-lr", "0.01", "--pct-start", "1.5"], "pct_start"),
    ("NaN momentum", ["train", *D, "--base-momentum", "nan"], "Invalid value for '--base-momentum'"),
    ("bad anneal", ["train", *D, "--anneal", "cubic"], "Invalid value for '--anneal'"),
    ("budget text", ["train", *D, "--time-budget", "soon"], "time budget such as 120, 90s, 2m"),
    ("budget negative", ["train", *D, "--time-budget", "-5"], "time budget"),
    ("budget too small", ["train", *D, "--time-budget", "1"], "give a larger --time-budget"),
    # --- train: files and folders -------------------------------------------------------------------------
    ("fashion data-dir without the data", ["train", "--data-dir", "MISSING", "--no-progress"], "MISSING"),
    ("imagefolder without data-dir", ["train", "--dataset", "imagefolder"], "needs --data-dir DIR"),
    ("imagefolder empty folder", ["train", "--dataset", "imagefolder", "--data-dir", "EMPTY"], "EMPTY"),
    ("imagefolder is a file", ["train", "--dataset", "imagefolder", "--data-dir", "FILE"], "FILE"),
    ("imagefolder corrupt images", ["train", "--dataset", "imagefolder", "--data-dir", "NOIMAGES"], "x.jpg"),
    ("pretrained missing", ["train", *D, "--pretrained", "MISSING.pt"], "does not exist"),
    ("pretrained corrupt", ["train", *D, "--pretrained", "CORRUPT"], "corrupt"),
    ("pretrained pickled code", ["train", *D, "--pretrained", "EVIL"], "CORRUPT_OR_REFUSED"),
    ("out is an earlier run", ["train", *D, "--out", "EARLIER"], "holds an earlier run"),
    ("out is a file", ["train", *D, "--out", "FILE"], "is a file"),
    ("resume missing", ["train", "--resume", "MISSING"], "Cannot resume"),
    ("resume empty", ["train", "--resume", "EMPTY"], "is empty"),
    ("resume a file", ["train", "--resume", "FILE"], "is not a folder"),
    # --- find-lr ------------------------------------------------------------------------------------------
    ("find-lr one iteration", ["find-lr", *D, "--num-iter", "1"], "num_iter"),
    ("find-lr end below start", ["find-lr", *D, "--start-lr", "1", "--end-lr", "0.1"], "end_lr"),
    ("find-lr NaN end", ["find-lr", *D, "--end-lr", "nan"], "Invalid value for '--end-lr'"),
    ("find-lr zero val batches", ["find-lr", *D, "--val-batches", "0"], "Invalid value for '--val-batches'"),
    ("find-lr out is an earlier run", ["find-lr", *D, "--out", "EARLIER"], "holds an earlier run"),
    # --- schedule -----------------------------------------------------------------------------------------
    ("schedule without LR", ["schedule", "--total-steps", "10"], "Missing option '--max-lr'"),
    ("schedule without length", ["schedule", "--max-lr", "0.1"], "Missing the run's length"),
    ("schedule zero LR", ["schedule", "--max-lr", "0", "--total-steps", "9"], "positive, finite"),
    ("schedule one step", ["schedule", "--max-lr", "0.1", "--total-steps", "1"], "total_steps"),
    ("schedule pct 2", ["schedule", "--max-lr", "0.1", "--total-steps", "100", "--pct-start", "2"], "pct_start"),
    ("schedule NaN LR", ["schedule", "--max-lr", "nan", "--total-steps", "9"], "not a finite number"),
    # --- compare ------------------------------------------------------------------------------------------
    ("compare unknown baseline", ["compare", *C, "--schedules", "linear"], "linear"),
    ("compare zero budget factor", ["compare", *C, "--budget-factor", "0"], "Invalid value for '--budget-factor'"),
    ("compare zero seeds", ["compare", *C, "--seeds", "0"], "Invalid value for '--seeds'"),
    ("compare tuning without validation", ["compare", *C, "--val-fraction", "0"], "validation"),
    ("compare out is an earlier run", ["compare", *C, "--out", "EARLIER"], "holds an earlier run"),
]


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize(("name", "args", "message"), CASES, ids=[c[0] for c in CASES])
def test_the_cli_refuses_bad_input_in_one_line(
    name: str, args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fixtures = _fixtures(tmp_path)
    argv = [fixtures.get(a, a) for a in args]
    argv = [a.replace("MISSING", fixtures["MISSING"]) if a.startswith("MISSING") else a for a in argv]
    if not any(a in ("--out", "--resume") for a in argv) and argv[0] != "schedule":
        argv += ["--out", str(tmp_path / "new-run")]
    if argv[0] == "schedule":
        argv += ["--plot", str(tmp_path / "schedule.png")]
    earlier = _digest(Path(fixtures["EARLIER"]))
    evil_marker = Path("/tmp/superconv-evil-ran")
    evil_marker.unlink(missing_ok=True)
    with warnings.catch_warnings(), pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == 2, (name, err)
    assert len(err) == 1 and err[0].startswith("superconv: error:"), err
    assert "Traceback" not in err[0]
    expected = fixtures.get(message, message)
    if message == "CORRUPT_OR_REFUSED":
        assert "Cannot read the weights file" in err[0] or "Refusing" in err[0], err[0]
    else:
        assert expected in err[0], err[0]
    assert _digest(Path(fixtures["EARLIER"])) == earlier  # nothing overwritten
    assert not evil_marker.exists()  # pickled code never ran


def test_the_sweep_covers_every_command_with_enough_cases() -> None:
    commands = {args[0] for _, args, _ in CASES}
    assert commands == {"train", "find-lr", "schedule", "compare"} and len(CASES) >= 40


LIBRARY_CASES = [
    ("fit epochs 0", "fit", {"epochs": 0}, "Expected epochs to be a positive integer"),
    ("fit max_lr NaN", "fit", {"max_lr": float("nan")}, "max_lr to be a positive, finite"),
    ("fit schedule", "fit", {"schedule": "linear"}, "Unknown schedule 'linear'"),
    ("fit monitor", "fit", {"monitor": "accuracy"}, "Unknown monitor 'accuracy'"),
    ("fit ema 2", "fit", {"ema": 2.0}, "EMA decay to be a number in (0, 1)"),
    ("fit resume without out_dir", "fit", {"resume": True}, "resume=True needs out_dir"),
    ("fit time budget", "fit", {"time_budget": "later"}, "time budget such as 120"),
    ("fit patience without validation", "fit_noval", {"patience": 2}, "needs a val_loader"),
    ("fit unsized loader", "fit_iter", {}, "must have a length"),
    ("load_data name", "load_data", {"name": "mnist"}, "Unknown dataset 'mnist'"),
    ("load_data val fraction", "load_data", {"name": "digits", "val_fraction": 1.0}, "val_fraction"),
    ("load_data batch", "load_data", {"name": "digits", "batch_size": 0}, "batch_size"),
    ("build_model name", "build_model", {"name": "resnet9000"}, "Unknown model 'resnet9000'"),
    ("build_model width", "build_model", {"name": "cnn", "width": -1}, "width"),
    ("OneCycleLR max_lr", "one_cycle", {"max_lr": -1.0}, "max_lr"),
    ("OneCycleLR pct_start", "one_cycle", {"max_lr": 0.1, "pct_start": 1.5}, "pct_start"),
]


@pytest.mark.parametrize(("name", "target", "kwargs", "message"), LIBRARY_CASES, ids=[c[0] for c in LIBRARY_CASES])
def test_the_library_refuses_bad_arguments_with_a_message(name: str, target: str, kwargs: dict, message: str) -> None:
    import re

    from superconv import OneCycleLR, fit
    from superconv.data import load_data
    from superconv.errors import ConfigError
    from superconv.models import build_model

    model = torch.nn.Linear(4, 2)
    batches = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))] * 3
    with pytest.raises(ConfigError, match=re.escape(message)):
        if target == "fit":
            fit(model, batches, batches, **{"max_lr": 0.01, "verbose": False, **kwargs})
        elif target == "fit_noval":
            fit(model, batches, None, max_lr=0.01, verbose=False, **kwargs)
        elif target == "fit_iter":
            fit(model, iter(batches), None, max_lr=0.01, verbose=False)
        elif target == "load_data":
            load_data(**kwargs)
        elif target == "build_model":
            build_model(**{"num_classes": 10, **kwargs})
        else:
            OneCycleLR(torch.optim.SGD(model.parameters(), lr=0.1), total_steps=10, **kwargs)
