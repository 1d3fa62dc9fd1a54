"""Device names: a tensor's device carries an index, so every device the package keeps must too."""

from __future__ import annotations

import pytest
import torch

from superconv.data import load_data
from superconv.data.loaders import TensorLoader
from superconv.device import canonical_device, resolve_device, same_device
from superconv.errors import ConfigError, DataError


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine with two CUDA devices, the second one current (only the queries are faked)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)


def test_torch_does_not_equate_an_index_less_device_with_its_tensors() -> None:
    # Why canonical_device exists: this comparison is False even on GPU 0.
    assert torch.device("cuda") != torch.device("cuda:0")
    assert torch.zeros(1).device == torch.device("cpu")


def test_canonical_device_names_the_index(two_gpus: None) -> None:
    assert canonical_device("cuda") == torch.device("cuda:1")  # the current GPU
    assert canonical_device("cuda:0") == torch.device("cuda:0")
    assert canonical_device("mps") == torch.device("mps:0")
    assert canonical_device("cpu") == torch.device("cpu")
    assert same_device("cuda", "cuda:1") and not same_device("cuda", "cuda:0")
    assert same_device(torch.device("mps"), "mps:0")


def test_resolve_device_returns_indexed_devices(two_gpus: None) -> None:
    assert resolve_device("auto") == torch.device("cuda:1")
    assert resolve_device("cuda") == torch.device("cuda:1")
    assert resolve_device(torch.device("cuda", 0)) == torch.device("cuda:0")
    assert resolve_device("cpu") == torch.device("cpu")


def test_a_gpu_index_beyond_the_machine_is_a_clear_error(two_gpus: None) -> None:
    with pytest.raises(ConfigError, match=r"'cuda:2' was asked for but this machine has 2 GPU\(s\), cuda:0 to cuda:1"):
        resolve_device("cuda:2")


def test_load_data_checks_the_gpu_index(two_gpus: None) -> None:
    with pytest.raises(ConfigError, match=r"has 2 GPU\(s\)"):
        load_data("digits", device="cuda:5")


def test_unavailable_cuda_is_still_refused() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda")


def test_tensor_loader_sees_data_on_its_device_as_resident() -> None:
    images = torch.zeros(8, 1, 4, 4, dtype=torch.uint8)
    labels = torch.zeros(8, dtype=torch.long)
    loader = TensorLoader(images, labels, batch_size=4, device="cpu", mean=(0.5,), std=(0.5,))
    assert loader.resident and loader.device == torch.device("cpu")


def test_tensor_loader_refuses_images_on_a_third_device() -> None:
    images = torch.zeros(8, 1, 4, 4, dtype=torch.uint8, device="meta")
    labels = torch.zeros(8, dtype=torch.long)
    with pytest.raises(DataError, match=r"images are on meta but the loader delivers to cpu: keep them in host"):
        TensorLoader(images, labels, batch_size=4, device="cpu", mean=(0.5,), std=(0.5,))


# -------------------------------------------------------------------------------------------- on a GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_fit_end_to_end_on_cuda(precision: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The CUDA path whole: data resident on the GPU, range test (with the GradScaler in fp16), fused AdamW,
    the one cycle counted in real updates, the EMA, checkpoints that load on the CPU."""
    from superconv import fit
    from superconv.models import build_model

    data = load_data("digits", batch_size=64, device="cuda", seed=0)
    assert data.resident and data.train.resident  # type: ignore[union-attr]
    x, _ = next(iter(data.train))
    assert x.device == torch.device("cuda", torch.cuda.current_device())
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=10, in_channels=1, image_size=8, width=8)
    result = fit(
        model,
        data.train,
        data.val,
        epochs=3,
        test_loader=data.test,
        device="cuda",
        precision=precision,
        ema=0.9,
        out_dir=tmp_path,
        verbose=False,
        progress=False,
        range_test_kwargs={"num_iter": 30},
    )
    assert result.precision == precision and result.device.startswith("cuda:")
    assert result.test_accuracy is not None and result.test_accuracy > 0.8
    assert result.steps == 3 * len(data.train)
    if precision != "fp16":  # in fp16 the schedule holds on the steps the GradScaler skips (its first ones)
        assert result.lrs[-1] < result.max_lr / 1e3  # the annihilation tail was reached
    ckpt = torch.load(tmp_path / "best.pt", weights_only=True, map_location="cpu")
    assert all(t.device.type == "cpu" for t in ckpt["model"].values())


def test_auto_precision_is_bf16_only_on_a_gpu_that_computes_it_natively(monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue 15 #4: torch.cuda.is_bf16_supported() also counts emulation (True on a V100 or T4) and asks about the
    # current GPU; precision="auto" must look at the requested GPU's compute capability.
    from superconv.device import resolve_precision

    capability = {0: (8, 0), 1: (7, 5)}  # GPU 0 an A100, GPU 1 a T4 (the current one)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability[index])
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(torch.version, "hip", None)
    assert resolve_precision("auto", torch.device("cuda:1")) is torch.float16
    assert resolve_precision("auto", torch.device("cuda")) is torch.float16  # the current GPU
    assert resolve_precision("auto", torch.device("cuda:0")) is torch.bfloat16
    monkeypatch.setattr(torch.version, "hip", "6.2")
    assert resolve_precision("auto", torch.device("cuda:1")) is torch.bfloat16  # every ROCm GPU has bf16
