"""Every notebook follows the template of DESIGN section 7 and is listed in the README.

These tests read the notebooks only; new notebooks are picked up without edits here.
"""

from __future__ import annotations

import re

import pytest

from tools.student import has_solution

from .notebook_utils import NOTEBOOKS, ROOT, notebook_paths, parameters, parameters_cell, read

PATHS = notebook_paths()
IDS = [p.stem for p in PATHS]


def test_there_are_notebooks():
    assert len(PATHS) >= 5


def test_numbers_start_at_zero_and_are_unique():
    numbers = [int(p.name[:2]) for p in PATHS]
    assert numbers[0] == 0 and len(set(numbers)) == len(numbers)


@pytest.fixture(params=PATHS, ids=IDS)
def nb_path(request):
    return request.param


def _markdown(nb) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def test_header_cell(nb_path):
    first = read(nb_path).cells[0]
    assert first.cell_type == "markdown"
    assert re.match(rf"# {nb_path.name[:2]} · \S", first.source), "title must read '# NN · Title'"
    assert "## Learning objectives" in first.source
    assert re.search(r"\*\*Time:\*\* about \d+ minutes", first.source), "time estimate missing"
    assert "**Prerequisites:**" in first.source


def test_parameters_cell(nb_path):
    nb = read(nb_path)
    cell = parameters_cell(nb)
    assert cell is not None, "no code cell tagged 'parameters'"
    assert cell is [c for c in nb.cells if c.cell_type == "code"][0], "parameters must be the first code cell"
    params = parameters(nb)
    assert params.get("QUICK") is False, "QUICK = False must be stored (outputs are from the full run)"
    assert params.get("SEED") == 0


def test_exercises(nb_path):
    nb = read(nb_path)
    exercises = [c for c in nb.cells if c.cell_type == "code" and has_solution(c.source)]
    assert len(exercises) >= 2, "at least two exercises with # BEGIN SOLUTION / # END SOLUTION"
    for cell in exercises:
        assert "qc.checks.check_" in cell.source, "every exercise cell calls its checker"
    assert "## Exercises" in _markdown(nb)


def test_summary_and_navigation(nb_path):
    nb = read(nb_path)
    text = _markdown(nb)
    assert "## Summary" in text
    index = PATHS.index(nb_path)
    if index + 1 < len(PATHS):
        target = PATHS[index + 1].name
    else:
        target = "../README.md#course-map"  # the last notebook so far points at the course map
    assert f"[Next →]({target})" in nb.cells[-1].source, f"last cell must link Next → {target}"
    assert f"[Next →]({target})" in nb.cells[0].source
    if index > 0:
        assert f"[← Previous]({PATHS[index - 1].name})" in nb.cells[0].source


def _compared_as_text(cell) -> bool:
    """Whether strict nbval compares this cell's stored outputs as text."""
    from quantcourse.claims import claims_in_outputs

    ignored = ("nbval-ignore-output" in cell.metadata.get("tags", [])
               or "NBVAL_IGNORE_OUTPUT" in cell.source)
    return not ignored and not claims_in_outputs(cell.get("outputs", []))


def test_outputs_are_stored_and_stable(nb_path):
    nb = read(nb_path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "commit notebooks executed"
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), "run top to bottom once"
    for c in code:
        for out in c.get("outputs", []):
            assert out.output_type != "error", "a stored error output"
            data = out.get("data", {})
            assert "image/svg+xml" not in data, "PNG figures only (nbval compares SVG text)"
            if out.output_type == "stream":
                assert out.name != "stderr" or not _compared_as_text(c), \
                    f"stderr output in a compared cell: {out.text[:200]}"
        assert not c.source.rstrip().endswith(";"), "assign to _ instead of a trailing ;"
    assert any("image/png" in o.get("data", {}) for c in code for o in c.get("outputs", [])), \
        "at least one figure"


def test_notebooks_import_only_public_names(nb_path):
    import quantcourse as qc

    src = "\n".join(c.source for c in read(nb_path).cells if c.cell_type == "code")
    assert "from quantcourse" not in src and "import quantcourse." not in src
    used = set(re.findall(r"\bqc\.([A-Za-z_]\w*)", src))
    private = sorted(used - set(qc.__all__))
    assert not private, f"names not in quantcourse.__all__: {private}"


def test_readme_course_map_lists_every_notebook():
    readme = (ROOT / "README.md").read_text()
    for path in PATHS:
        assert f"notebooks/{path.name}" in readme, f"{path.name} missing from the README course map"


def test_no_stray_notebooks():
    stray = [p.name for p in NOTEBOOKS.glob("*.ipynb") if p not in PATHS]
    assert not stray, f"notebooks not named NN_slug.ipynb: {stray}"


def test_claims_are_recorded_once_each(nb_path):
    """Every notebook states its measured claims through qc.claim, each name once."""
    from tools.claim_spread import notebook_claims

    claims = notebook_claims(nb_path)  # raises on a name recorded in two cells
    assert claims, "no qc.claim in this notebook: its measured numbers are not checked"
    for name, record in claims.items():
        assert record["tol"] >= 0 and set(record) == {"name", "value", "lo", "hi", "tol"}, name


def _teaching_cells(nb):
    """Code cells a learner studies: not the parameters cell, a self-check or an exercise."""
    return [c for c in nb.cells[1:] if c.cell_type == "code"
            and "parameters" not in c.metadata.get("tags", [])
            and not c.source.lstrip().startswith("# Self-check")
            and not has_solution(c.source)]


def test_teaching_cells_are_short_and_hold_no_asserts(nb_path):
    """A teaching cell shows one step (at most 30 lines); a section's checks go in one
    self-check cell at its end (first line ``# Self-check``), not between the steps."""
    for i, cell in enumerate(_teaching_cells(read(nb_path))):
        lines = cell.source.splitlines()
        assert len(lines) <= 30, f"teaching cell {i} has {len(lines)} lines: {lines[0][:60]}"
        asserts = [s for s in lines if re.match(r"\s*assert\b", s)]
        assert not asserts, f"teaching cell {i} asserts ({asserts[0].strip()[:60]}): " \
                            "move the check into the section's self-check cell"


def test_time_estimate_follows_the_stated_rule(nb_path):
    from tools.time_estimate import estimate, stated_minutes

    assert stated_minutes(nb_path) == estimate(nb_path).minutes, \
        "set **Time:** to `python -m tools.time_estimate`'s value"


def test_readme_times_are_the_notebooks_times():
    from tools.time_estimate import stated_minutes

    readme = (ROOT / "README.md").read_text()
    assert "120 words a minute" in readme, "the README states the time rule"
    for path in PATHS:
        row = re.search(rf"^\|[^\n]*notebooks/{re.escape(path.name)}[^\n]*\| (\d+) min \|$",
                        readme, re.M)
        assert row, f"{path.name}: no course-map row ending in '| N min |'"
        assert int(row.group(1)) == stated_minutes(path), path.name
