"""Execute every notebook with papermill into a build folder (`make course`).

python -m tests.run_notebooks --mode full --out build/executed
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from .notebook_utils import KERNEL, ROOT, notebook_paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["full", "quick"], default="full")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "executed")
    parser.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args(argv)

    import papermill
    from tqdm import tqdm

    args.out.mkdir(parents=True, exist_ok=True)
    paths = [p.resolve() for p in args.notebooks] or notebook_paths()
    failed = []
    bar = tqdm(paths, unit="notebook", desc=f"{args.mode} run")
    for path in bar:
        bar.set_postfix_str(path.name)
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                papermill.execute_notebook(
                    str(path), str(args.out / path.name),
                    parameters={"QUICK": args.mode == "quick", "SEED": 0},
                    kernel_name=KERNEL, cwd=str(path.parent), progress_bar=False,
                )
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
