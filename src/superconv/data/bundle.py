"""``DataBundle``: the splits of one dataset and what a model and a trainer need to know about them."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from superconv.data.loaders import Loader

__all__ = ["DataBundle"]


@dataclass
class DataBundle:
    """The splits of one dataset plus what a model needs to know about its inputs.

    ``decisions`` maps a topic (``"image_size"``, ``"storage"``, ``"normalization"``, ``"flip"``,
    ``"bad_images"``, ``"splits"``) to one sentence that says what the data layer decided and why; the CLI
    prints them and records them in config.json.
    """

    train: Loader  # iterable of (inputs, labels); len() = batches per epoch
    val: Loader | None
    test: Loader | None
    num_classes: int
    in_channels: int
    image_size: int  # square side of the delivered batches
    classes: list[str]
    name: str
    train_size: int  # number of training examples
    resident: bool  # True when the data lives on the target device (fast path)
    # Whether a horizontal flip keeps an image's label (clothes, photos: yes; digits, text: no), as the dataset
    # declares it or as `flip=` says; flip augmentation and flip test-time augmentation only where True.
    flip_invariant: bool = False
    # True: every image decoded once and held in memory (TensorLoader); False: decoded from files per batch.
    cached: bool = True
    decisions: dict[str, str] = field(default_factory=dict)

    def with_batch_size(self, batch_size: int, eval_batch_size: int | None = None) -> DataBundle:
        """The same splits in training batches of ``batch_size`` (evaluation: ``eval_batch_size``, default 2x)."""
        eval_bs = eval_batch_size or 2 * batch_size
        return replace(
            self,
            train=self.train.with_batch_size(batch_size),
            val=self.val.with_batch_size(eval_bs) if self.val is not None else None,
            test=self.test.with_batch_size(eval_bs) if self.test is not None else None,
        )
