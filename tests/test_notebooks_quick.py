"""The quick papermill pass: every notebook runs top to bottom with QUICK=True.

Outputs go to build/quick/; the stored notebooks are never modified (strict nbval, run by
`make test` after these tests, compares the full-mode outputs).
"""

from __future__ import annotations

import warnings

import pytest

from .notebook_utils import KERNEL, ROOT, notebook_paths

PATHS = notebook_paths()
CELL_TIMEOUT_S = 300


@pytest.mark.notebook
@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebook_runs_in_quick_mode(path):
    papermill = pytest.importorskip("papermill")
    out_dir = ROOT / "build" / "quick"
    out_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        papermill.execute_notebook(
            str(path),
            str(out_dir / path.name),
            parameters={"QUICK": True, "SEED": 0},
            kernel_name=KERNEL,
            cwd=str(path.parent),
            execution_timeout=CELL_TIMEOUT_S,
            progress_bar=False,
        )
