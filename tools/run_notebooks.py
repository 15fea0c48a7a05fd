"""Execute notebooks with papermill into a build folder (`make course`).

python -m tools.run_notebooks --mode full --out build/executed [notebooks/NN_name.ipynb ...]

`execute_notebook` is the one place a notebook is run with papermill: `make course`, the quick
pass (tests/test_notebooks_quick.py) and `make claims-spread` (tools/claim_spread.py) all call it.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from .notebook_utils import KERNEL, ROOT, notebook_paths

# The same per-cell limit as strict nbval (`--nbval-cell-timeout`) and `make execute`.
CELL_TIMEOUT_S = 600


def execute_notebook(path: Path, out_dir: Path, *, quick: bool,
                     cell_timeout: int = CELL_TIMEOUT_S) -> Path:
    """Run ``path`` with papermill (``QUICK=quick``, ``SEED=0``) into ``out_dir``.

    The kernel is the course's (`quantcourse`), the working directory the notebook's folder;
    a cell running longer than ``cell_timeout`` seconds fails the run, and so does any error.
    Returns the executed notebook's path; the input notebook is never modified.
    """
    import papermill

    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / path.name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        papermill.execute_notebook(
            str(path), str(out),
            parameters={"QUICK": quick, "SEED": 0},
            kernel_name=KERNEL, cwd=str(path.parent),
            execution_timeout=cell_timeout, progress_bar=False,
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["full", "quick"], default="full")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "executed")
    parser.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args(argv)

    from tqdm import tqdm

    paths = [p.resolve() for p in args.notebooks] or notebook_paths()
    failed = []
    bar = tqdm(paths, unit="notebook", desc=f"{args.mode} run")
    for path in bar:
        bar.set_postfix_str(path.name)
        start = time.perf_counter()
        try:
            execute_notebook(path, args.out, quick=args.mode == "quick")
        except Exception as exc:  # report every failing notebook, not just the first
            failed.append(path.name)
            tqdm.write(f"FAILED {path.name}: {type(exc).__name__}: {str(exc)[:500]}")
        else:
            tqdm.write(f"ok {path.name} ({time.perf_counter() - start:.1f} s)")
    if failed:
        print(f"{len(failed)} notebook(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"{len(paths)} notebooks executed into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
