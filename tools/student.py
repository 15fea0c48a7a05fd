"""Write the student copy of the course: solutions replaced by stubs, outputs cleared, and
an archive to hand out.

``python -m tools.student notebooks build/student`` (``make student``) writes the notebooks and
``build/quantcourse-student.zip``: those notebooks, the package, the files that install it and
``SETUP.md`` (the set-up steps for a learner's machine). Solutions sit between
``# BEGIN SOLUTION`` and ``# END SOLUTION`` lines; each block becomes
``raise NotImplementedError(...)`` at the marker's indentation, inside the exercise's function,
so an open exercise is reported by its checker and Run All goes on.
"""

from __future__ import annotations

import argparse
import re
import zipfile
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


SETUP = """# quantcourse: set-up for learners

You need Python 3.10 or newer and about 3 GB of disk. No GPU and no network at run time:
the models and data ship with the packages installed below.

```bash
python3 -m venv .venv
. .venv/bin/activate                   # Windows: .venv\\Scripts\\activate
pip install torch --index-url https://download.pytorch.org/whl/cpu   # the CPU build (small)
pip install -e .
python -m ipykernel install --user --name quantcourse --display-name "Python (quantcourse)"
jupyter lab notebooks
```

With `make` available, `make setup` then `make lab` do the same. Open the notebooks in order,
starting with `00_welcome.ipynb`; its set-up check says whether everything works.

Each exercise is a function with `raise NotImplementedError(...)` in its body: replace that
line with your answer and run the cell. The checker below it prints `Correct: ...`, says what
differs, or reports the exercise as open. Run All works with exercises left open.

If a notebook is slow on your machine, set `QUICK = True` in its first code cell: smaller data
and sizes, the same steps.
"""

# what the archive holds besides the student notebooks: the package and how to install it
PACK = ("quantcourse", "pyproject.toml", "environment.yml", "README.md", "Makefile")


def make_archive(student_dir: Path, archive: Path, root: Path) -> Path:
    """Zip the student notebooks, the package and ``SETUP.md`` into ``archive``."""
    top = archive.stem
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{top}/SETUP.md", SETUP)
        for nb in sorted(student_dir.glob("*.ipynb")):
            zf.write(nb, f"{top}/notebooks/{nb.name}")
        for name in PACK:
            path = root / name
            files = sorted(path.rglob("*")) if path.is_dir() else [path]
            for f in files:
                if f.is_file() and "__pycache__" not in f.parts and f.exists():
                    zf.write(f, f"{top}/{f.relative_to(root)}")
    return archive


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, nargs="?", default=Path("notebooks"))
    parser.add_argument("dst", type=Path, nargs="?", default=Path("build/student"))
    args = parser.parse_args(argv)
    paths = make_student(args.src, args.dst)
    archive = make_archive(args.dst, args.dst.parent / "quantcourse-student.zip",
                           Path(__file__).resolve().parents[1])
    print(f"wrote {len(paths)} student notebooks to {args.dst} and the hand-out {archive}")


if __name__ == "__main__":
    main()
