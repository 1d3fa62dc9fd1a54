"""The examples in the library's docstrings run and print what they say (they are its smallest documentation)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import superconv


def _modules_with_examples() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(superconv.__path__, prefix="superconv."):
        if info.name.endswith("__main__"):
            continue  # importing it runs the command line
        if any(test.examples for test in doctest.DocTestFinder().find(importlib.import_module(info.name))):
            names.append(info.name)
    return names


MODULES = _modules_with_examples()


def test_the_core_modules_have_examples() -> None:
    assert {"superconv.schedule.one_cycle", "superconv.schedule.scheduler", "superconv.finder.suggest"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (run doctest on it)"
