"""Helpers the notebook tests and `make course` share: finding and reading notebooks."""

from __future__ import annotations

import ast
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
    return nbformat.read(path, as_version=4)


def parameters_cell(nb) -> nbformat.NotebookNode | None:
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            return cell
    return None


def parameters(nb) -> dict:
    """The literal assignments of the cell tagged ``parameters``."""
    cell = parameters_cell(nb)
    if cell is None:
        return {}
    values = {}
    for node in ast.parse(cell.source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)):
            raise ValueError(f"parameters cell holds a non-assignment: {ast.unparse(node)}")
        values[node.targets[0].id] = ast.literal_eval(node.value)
    return values
