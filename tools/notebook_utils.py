"""Finding and reading the course notebooks: shared by the build tools and the tests."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAME = re.compile(r"^(\d\d)_[a-z0-9_]+\.ipynb$")
KERNEL = "quantcourse"


def notebook_paths() -> list[Path]:
    """Every course notebook, in course order."""
    return sorted(p for p in NOTEBOOKS.glob("*.ipynb") if NAME.match(p.name))


def read(path: Path) -> nbformat.NotebookNode:
    """A notebook as nbformat version 4."""
    return nbformat.read(path, as_version=4)
