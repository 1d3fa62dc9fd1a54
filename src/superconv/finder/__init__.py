"""The LR range test: ``LRFinder`` (a drop-in for torch-lr-finder's) over a pure plan (``plan``), the loop
(``sweep``), data and losses (``batches``), mixed precision (``amp``), the exact restore (``snapshot``), the
estimators that read a suggestion off the curve (``suggest``), the result (``result``), its figures (``plotting``)."""

from superconv.finder.lr_finder import LRFinder, find_lr
from superconv.finder.result import RangeTestResult

__all__ = ["LRFinder", "RangeTestResult", "find_lr"]
