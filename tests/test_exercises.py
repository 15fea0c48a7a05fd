"""The exercise machinery: every checker accepts the notebook's reference solution and rejects
the student stub and at least one plausible wrong answer with a message naming what differs."""

from __future__ import annotations

import contextlib
import importlib
import io
import math
import pkgutil

import numpy as np
import pytest
import torch

import quantcourse as qc
from quantcourse.checks import CHECKERS, CheckFailed
from tools.student import STUB, has_solution, strip_solutions

from . import wrong_answers
from .notebook_utils import notebook_paths, read


def _exercise_cells():
    cells = []
    for path in notebook_paths():
        for i, cell in enumerate(read(path).cells):
            if cell.cell_type == "code" and has_solution(cell.source):
                cells.append(pytest.param(cell.source, id=f"{path.stem}-cell{i}"))
    return cells


def _wrong_answers() -> dict[str, list]:
    table: dict[str, list] = {}
    for mod in pkgutil.iter_modules(wrong_answers.__path__):
        module = importlib.import_module(f"{wrong_answers.__name__}.{mod.name}")
        for name, cases in getattr(module, "WRONG_ANSWERS", {}).items():
            table.setdefault(name, []).extend(cases)
    return table


WRONG = _wrong_answers()
EXERCISES = _exercise_cells()


def _run(source: str) -> str:
    namespace = {"qc": qc, "torch": torch, "np": np, "math": math}
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(source, "<exercise>", "exec"), namespace)
    return buf.getvalue()


@pytest.mark.parametrize("source", EXERCISES)
def test_reference_solution_passes(source):
    torch.manual_seed(0)
    out = _run(source)
    assert "Correct:" in out


@pytest.mark.parametrize("source", EXERCISES)
def test_student_stub_is_reported_open_without_stopping_the_notebook(source):
    stub = strip_solutions(source)
    assert STUB in stub and "# BEGIN SOLUTION" not in stub
    out = _run(stub)  # raises nothing: Run All goes on past an open exercise
    assert "Exercise open" in out and "Correct:" not in out


@pytest.mark.parametrize("source", EXERCISES)
def test_solutions_sit_inside_a_function(source):
    # a top-level stub would raise when the cell runs and stop Run All
    for line in source.splitlines():
        if line.strip() == "# BEGIN SOLUTION":
            assert line.startswith(" "), "a solution block must be a function's body"


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_no_later_cell_depends_on_an_exercise(path):
    import ast

    cells = [c for c in read(path).cells if c.cell_type == "code"]
    defined: set[str] = set()
    for cell in cells:
        if has_solution(cell.source):
            tree = ast.parse(cell.source)
            defined |= {n.name for n in tree.body
                        if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
            defined |= {t.id for n in tree.body if isinstance(n, ast.Assign)
                        for t in n.targets if isinstance(t, ast.Name)}
        elif defined:
            used = {n.id for n in ast.walk(ast.parse(cell.source)) if isinstance(n, ast.Name)}
            assert not used & defined, f"a cell after the exercises uses {used & defined}"


def test_every_checker_is_used_by_an_exercise():
    used = "\n".join(p.values[0] for p in EXERCISES)
    unused = [name for name in CHECKERS if f"qc.checks.{name}(" not in used]
    assert not unused, f"checkers no exercise calls: {unused}"


def test_every_checker_has_a_wrong_answer():
    missing = [name for name in CHECKERS if not WRONG.get(name)]
    assert not missing, f"checkers with no plausible wrong answer in tests/wrong_answers: {missing}"
    unknown = sorted(set(WRONG) - set(CHECKERS))
    assert not unknown, f"wrong answers for unknown checkers: {unknown}"


def test_checks_exports_every_registered_checker_by_name():
    import quantcourse.checks as checks

    exported = set(checks.__all__) - {"CHECKERS", "CheckFailed"}
    assert exported == set(CHECKERS)
    assert checks.__all__ == sorted(checks.__all__)
    assert all(getattr(checks, name) is CHECKERS[name] for name in CHECKERS)


def test_checkers_import_submodules_not_the_package_root():
    import re
    import subprocess
    import sys
    from pathlib import Path

    import quantcourse.checks as checks

    for path in sorted(Path(checks.__file__).parent.glob("*.py")):
        upward = re.findall(r"^\s*(?:import quantcourse\b|from quantcourse\b).*", path.read_text(),
                            re.M)
        assert not upward, f"{path.name} imports the package root: {upward}"
    # quantcourse/__init__.py imports checks: both orders work from a fresh interpreter
    for stmt in ("import quantcourse.checks", "import quantcourse"):
        subprocess.run([sys.executable, "-c", stmt], check=True, timeout=300)


def test_a_checker_name_cannot_be_registered_twice():
    from quantcourse.checks._core import checker

    def check_quantize(answer):  # the name of a checker nb02 already registers
        raise AssertionError("never called")

    with pytest.raises(ValueError, match="registered twice.*nb02_scale_and_zero_point.*"
                                         "test_exercises"):
        checker(check_quantize)
    assert CHECKERS["check_quantize"].__module__.endswith("nb02_scale_and_zero_point")


def test_hint_for_names_the_first_matching_mistake_and_skips_the_right_answer():
    from quantcourse.checks._core import close, hint_for

    mistakes = [("off by one", 4), ("lazy", lambda: torch.tensor([1.0, 2.0])), ("none", None)]
    assert hint_for(4, mistakes, default="d") == "off by one"
    assert hint_for(torch.tensor([1.0, 2.0 + 1e-9]), mistakes, rtol=1e-6) == "lazy"
    assert hint_for(torch.tensor([1.0, 2.1]), mistakes, rtol=1e-6, default="d") == "d"
    assert hint_for(4, {"equals the answer": 4}, want=4, default="d") == "d"
    assert close((1, torch.tensor([2.0])), [1.0, torch.tensor([2.0])])
    assert not close(torch.zeros(2), torch.zeros(3)) and not close(math.nan, math.nan)
    assert not close(1.0, 1.0 + 1e-12)  # numbers compare in float64, not float32


@pytest.mark.parametrize(
    "name, answer, needle",
    [pytest.param(name, answer, needle, id=f"{name}-{getattr(answer, '__name__', i)}")
     for name, cases in sorted(WRONG.items()) for i, (answer, needle) in enumerate(cases)],
)
def test_wrong_answer_is_rejected_with_what_differs(name, answer, needle):
    torch.manual_seed(0)
    with pytest.raises(CheckFailed) as info:
        with contextlib.redirect_stdout(io.StringIO()):
            CHECKERS[name](answer)
    message = str(info.value)
    assert needle.lower() in message.lower(), message
    assert "not implemented" not in message


def test_checker_reports_an_open_exercise_and_raises_for_a_wrong_one():
    from quantcourse.checks._core import call, checker

    def check_policy_demo(answer):
        if call(answer, 2, what="demo") != 4:
            raise CheckFailed("demo: expected 4")
        print("Correct: demo")

    try:
        run = checker(check_policy_demo)

        def stub(x):
            raise NotImplementedError

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert run(stub) is None
        assert buf.getvalue().startswith("Exercise open: demo")
        with pytest.raises(CheckFailed, match="expected 4"):
            run(lambda x: x + 1)
        with pytest.raises(CheckFailed, match="raised ZeroDivisionError"):
            run(lambda x: 1 / 0)
    finally:
        CHECKERS.pop("check_policy_demo", None)


def test_fmt_pair_shows_digits_that_differ():
    from quantcourse.checks._core import fmt_pair

    assert fmt_pair(0.17121, 0.17124) == ("0.17121", "0.17124")
    assert fmt_pair(0.5, 0.5) == ("0.5", "0.5")
    a, b = fmt_pair(1.0, 1.0 + 2**-52)
    assert a != b and float(a) == 1.0 and float(b) == 1.0 + 2**-52


def test_as_codes_accepts_whole_numbers_in_any_dtype_only():
    from quantcourse.checks._core import as_codes

    want = torch.tensor([-3, 0, 7])
    for dtype in (torch.int8, torch.int32, torch.float32, torch.float64):
        assert torch.equal(as_codes(want.to(dtype), "codes"), want)
    for bad in (torch.tensor([0.5, 1.0]), torch.tensor([math.nan]), torch.tensor([True])):
        with pytest.raises(CheckFailed):
            as_codes(bad, "codes")


@pytest.mark.parametrize("scale", [0.1, 0.0123, 3.7, 1 / 3])
def test_division_trap_finds_values_where_dividing_differs(scale):
    from quantcourse.checks._core import division_trap

    x = division_trap(scale)
    assert 1 <= len(x) <= 8 and x.dtype == torch.float32
    s = torch.tensor(scale, dtype=torch.float32)
    assert bool((torch.round(x / s) != torch.round(x * (1 / s))).all())
    assert len(division_trap(0.25)) == 0  # a power of two: both forms agree


def test_without_package_refuses_qc_calls_and_restores_them():
    from quantcourse.checks._core import without_package

    quantize, qp = qc.quantize, qc.symmetric_qparams(torch.ones(2), bits=8)
    with without_package("by hand"):
        with pytest.raises(CheckFailed, match="called qc.quantize"):
            qc.quantize(torch.zeros(2), qp)
        assert torch.equal(torch.round(torch.ones(2) * 2), torch.full((2,), 2.0))  # torch is free
    assert qc.quantize is quantize


def test_strip_solutions_keeps_indentation_and_rejects_bad_markers():
    src = "def f(x):\n    # BEGIN SOLUTION\n    return x\n    # END SOLUTION\n\nqc.checks.x(f)"
    assert strip_solutions(src) == f"def f(x):\n    {STUB}\n\nqc.checks.x(f)"
    for bad in ["# BEGIN SOLUTION\nx", "# END SOLUTION", "# BEGIN SOLUTION\n# BEGIN SOLUTION"]:
        with pytest.raises(ValueError):
            strip_solutions(bad)


def test_make_student_writes_stubbed_notebooks_without_outputs(tmp_path):
    from tools.student import make_student

    paths = make_student(notebook_paths()[0].parent, tmp_path)
    assert [p.name for p in paths] == [p.name for p in notebook_paths()]
    for path in paths:
        nb = read(path)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code)
        assert not any("execution" in c.metadata for c in nb.cells)  # no timings
        src = "\n".join(c.source for c in code)
        assert "# BEGIN SOLUTION" not in src and STUB in src


def test_student_archive_holds_stubbed_notebooks_the_package_and_setup(tmp_path):
    import zipfile

    from tools.notebook_utils import ROOT
    from tools.student import make_archive, make_student

    make_student(notebook_paths()[0].parent, tmp_path / "student")
    archive = make_archive(tmp_path / "student", tmp_path / "quantcourse-student.zip", ROOT)
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
        nbs = sorted(n for n in names if n.startswith("quantcourse-student/notebooks/"))
        assert [n.rsplit("/", 1)[1] for n in nbs] == [p.name for p in notebook_paths()]
        assert all("# BEGIN SOLUTION" not in zf.read(n).decode() for n in nbs)
        for needed in ("SETUP.md", "pyproject.toml", "quantcourse/__init__.py",
                       "quantcourse/weights/digits_cnn.safetensors"):
            assert f"quantcourse-student/{needed}" in names, needed
        assert not any("__pycache__" in n or n.startswith("quantcourse-student/tests/")
                       for n in names)
        assert "pip install -e ." in zf.read("quantcourse-student/SETUP.md").decode()
