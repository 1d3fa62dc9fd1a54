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
