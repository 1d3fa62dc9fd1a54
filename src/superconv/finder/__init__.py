"""The LR range test: ``LRFinder`` (a drop-in for torch-lr-finder's) and its sweep, the exact restore (``snapshot``),
the pure estimators that read a suggestion off the curve (``suggest``) and the result (``result``)."""

from superconv.finder.lr_finder import LRFinder, find_lr
from superconv.finder.result import RangeTestResult

__all__ = ["LRFinder", "RangeTestResult", "find_lr"]
