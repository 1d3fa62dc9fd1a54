"""The image-folder decisions as pure functions: size, cache or stream, workers."""

from __future__ import annotations

import pytest

from superconv.data import decisions
from superconv.data.decisions import (
    choose_cache,
    default_cache_budget,
    human_bytes,
    infer_image_size,
    stream_workers,
)


@pytest.mark.parametrize(
    ("sides", "device_type", "size", "why"),
    [
        ([64] * 5, "cuda", 64, "64 px: the images' typical (median) shorter side is 64 px; pass image_size"),
        ([64] * 5, "cpu", 32, "capped at 32 px for a model trained from scratch on a CPU"),
        ([16, 20, 24], "cuda", 32, "typical (median) shorter side is 20 px, raised to 32 px, the smallest size"),
        ([28, 28, 99], "cuda", 32, "32 px: the images' typical (median) shorter side is 28 px, rounded to a multiple"),
        (
            [75, 77, 300, 60, 2000],
            "cuda",
            80,
            "80 px: the images' typical (median) shorter side is 77 px, rounded to a multiple of 8",
        ),
        ([375, 500, 480], "mps", 128, "capped at 128 px for a model trained from scratch on a GPU"),
    ],
)
def test_size_from_the_images(sides: list[int], device_type: str, size: int, why: str) -> None:
    got, sentence = infer_image_size(sides, device_type=device_type)
    assert got == size and why in sentence


def test_pretrained_and_explicit_sizes_win() -> None:
    assert infer_image_size([64], device_type="cpu", pretrained_size=224)[0] == 224
    got, sentence = infer_image_size([64], device_type="cpu", pretrained_size=224, explicit=48)
    assert got == 48 and sentence == "48 px, as given (the images' typical (median) shorter side is 64 px)"
    assert infer_image_size([], device_type="cpu") == (32, "32 px (no image sizes were read)")


def test_cache_decision() -> None:
    assert choose_cache(1_000, 1_000, "given") == (
        True,
        "the decoded images take 1.0 KB and fit the cache budget of 1.0 KB (given)",
    )
    fits, sentence = choose_cache(3_200_000_000, 100_000_000, "given")
    assert not fits and sentence == "the decoded images take 3.2 GB and do not fit the cache budget of 100.0 MB (given)"


def test_default_budget_is_a_fraction_of_available_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decisions, "available_memory", lambda: 8_000_000_000)
    assert default_cache_budget() == (2_000_000_000, "25% of the 8.0 GB of memory available")
    monkeypatch.setattr(decisions, "available_memory", lambda: None)
    assert default_cache_budget() == (0, "the available memory is unknown, so no cache")


def test_available_memory_is_read() -> None:
    available = decisions.available_memory()
    assert available is None or available > 0


@pytest.mark.parametrize(
    ("device_type", "cpus", "workers"),
    [("cpu", 2, 1), ("cpu", 1, 1), ("cpu", 16, 8), ("cuda", 2, 1), ("cuda", 16, 8), ("cuda", 4, 3)],
)
def test_stream_workers(device_type: str, cpus: int, workers: int) -> None:
    assert stream_workers(device_type, cpus) == workers


@pytest.mark.parametrize(("nbytes", "text"), [(999, "999 B"), (37_056, "37.1 KB"), (6.1e9, "6.1 GB")])
def test_human_bytes(nbytes: float, text: str) -> None:
    assert human_bytes(nbytes) == text
