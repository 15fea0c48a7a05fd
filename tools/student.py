"""Write the student copy of the course: solutions replaced by stubs, outputs cleared.

``python -m tools.student notebooks build/student`` (``make student``).
Solutions sit between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` lines; each block becomes
``raise NotImplementedError(...)`` at the marker's indentation.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import nbformat

BEGIN = "# BEGIN SOLUTION"
END = "# END SOLUTION"
STUB = 'raise NotImplementedError("Exercise: write your solution here")'
_MARK = re.compile(r"^(\s*)# (BEGIN|END) SOLUTION\s*$")


def strip_solutions(source: str) -> str:
    """Replace every solution block in ``source`` by a stub; fail on unbalanced markers."""
    out: list[str] = []
    inside = False
    for n, line in enumerate(source.splitlines(), 1):
        m = _MARK.match(line)
        if m and m.group(2) == "BEGIN":
            if inside:
                raise ValueError(f"line {n}: {BEGIN} inside another solution block")
            inside = True
            out.append(m.group(1) + STUB)
        elif m:
            if not inside:
                raise ValueError(f"line {n}: {END} without {BEGIN}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{BEGIN} without {END}")
    return "\n".join(out)


def has_solution(source: str) -> bool:
    """Whether a cell holds a solution block."""
    return any(_MARK.match(line) for line in source.splitlines())


def make_student(src: Path, dst: Path) -> list[Path]:
    """Write a student copy of every notebook in ``src`` into ``dst``; returns the paths."""
    dst.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(src.glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                if has_solution(cell.source):
                    cell.source = strip_solutions(cell.source)
                cell.outputs = []
                cell.execution_count = None
            for key in ("execution", "papermill", "ExecuteTime"):
                cell.metadata.pop(key, None)
        nb.metadata.pop("papermill", None)
        out = dst / path.name
        nbformat.write(nb, out)
        written.append(out)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, nargs="?", default=Path("notebooks"))
    parser.add_argument("dst", type=Path, nargs="?", default=Path("build/student"))
    args = parser.parse_args(argv)
    paths = make_student(args.src, args.dst)
    print(f"wrote {len(paths)} student notebooks to {args.dst}")


if __name__ == "__main__":
    main()
