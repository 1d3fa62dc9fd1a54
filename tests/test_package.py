"""The package surface: exports, lightness, typing marker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import superconv


def test_all_names_resolve() -> None:
    for name in superconv.__all__:
        assert getattr(superconv, name) is not None, name


def test_import_is_light() -> None:
    code = (
        "import sys, superconv; "
        "heavy = [m for m in ('matplotlib', 'torchvision', 'sklearn', 'tqdm') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_py_typed_ships() -> None:
    assert (Path(superconv.__file__).parent / "py.typed").exists()


def test_all_matches_the_lazy_exports() -> None:
    assert sorted(superconv.__all__) == sorted(["__version__", *superconv._EXPORTS])


def test_public_functions_are_not_shadowed_by_submodules() -> None:
    # Importing every submodule first must not turn superconv.fit / superconv.compare into modules.
    code = (
        "import importlib, pkgutil, superconv\n"
        "for m in pkgutil.iter_modules(superconv.__path__):\n"
        "    if not m.name.startswith('__'): importlib.import_module('superconv.' + m.name)\n"
        "print(callable(superconv.fit), callable(superconv.compare), type(superconv.fit).__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "function"]
