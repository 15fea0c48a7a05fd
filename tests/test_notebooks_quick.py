"""The quick papermill pass: every notebook runs top to bottom with QUICK=True.

Outputs go to build/quick/; the stored notebooks are never modified (strict nbval, run by
`make test` after these tests, compares the full-mode outputs). The notebooks run through
`tools.run_notebooks.execute_notebook`, the same function as `make course`.
"""

from __future__ import annotations

import pytest

from tools.run_notebooks import execute_notebook

from .notebook_utils import ROOT, notebook_paths

PATHS = notebook_paths()
CELL_TIMEOUT_S = 300


@pytest.mark.notebook
@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebook_runs_in_quick_mode(path):
    pytest.importorskip("papermill")
    execute_notebook(path, ROOT / "build" / "quick", quick=True, cell_timeout=CELL_TIMEOUT_S)
