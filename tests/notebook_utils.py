"""Helpers the notebook tests share: finding and reading notebooks (from tools/, which
`make course` uses too) and reading a notebook's parameters cell."""

from __future__ import annotations

import ast

import nbformat

from tools.notebook_utils import KERNEL, NOTEBOOKS, ROOT, notebook_paths, read

__all__ = ["KERNEL", "NOTEBOOKS", "ROOT", "notebook_paths", "parameters",
           "parameters_cell", "read"]


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
