"""pytest plugin for nbval: cells that record claims are compared claim by claim, not as text.

Loaded by the Makefile's nbval runs (``-p tests.nbval_claims``). nbval re-executes every
notebook in full mode; for each cell whose committed outputs hold claims (``qc.claim``), text
comparison is switched off and, instead, every claim of the fresh run must match the one
recorded in the committed notebook: the same names (a claim added or lost fails: the notebook
is stale), the same bounds and tolerance, and a value within that tolerance.
"""

from __future__ import annotations

import pytest

from quantcourse.claims import claims_in_outputs


def _is_cell(item) -> bool:
    return type(item).__name__ == "IPyNbCell" and hasattr(item, "cell")


def compare_claims(stored: dict[str, dict], fresh: dict[str, dict]) -> list[str]:
    """What differs between the claims recorded in a committed cell and a fresh run of it."""
    problems = []
    for name in sorted(stored.keys() - fresh.keys()):
        problems.append(f"claim {name!r} is in the committed notebook but the fresh run "
                        "did not make it (re-execute the notebook)")
    for name in sorted(fresh.keys() - stored.keys()):
        problems.append(f"claim {name!r} was made by the fresh run but is not recorded in "
                        "the committed notebook (re-execute the notebook)")
    for name in sorted(stored.keys() & fresh.keys()):
        s, f = stored[name], fresh[name]
        for key in ("lo", "hi", "tol"):
            if s.get(key) != f.get(key):
                problems.append(f"claim {name!r}: {key} is {f.get(key)!r} in the code but "
                                f"{s.get(key)!r} in the committed outputs (re-execute)")
        diff = abs(float(f["value"]) - float(s["value"]))
        if diff > float(s["tol"]):
            problems.append(
                f"claim {name!r}: fresh value {f['value']!r} differs from the recorded "
                f"{s['value']!r} by {diff:.3g}, more than its tol {s['tol']!r}; if the code "
                "changed, re-execute the notebook; if only the machine did, widen tol to 3x "
                "the spread that `make claims-spread` measures"
            )
    return problems


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    for item in items:
        if _is_cell(item) and claims_in_outputs(item.cell.get("outputs", [])):
            item.options["check"] = False


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield
    if _is_cell(item) and not item.options.get("skip"):
        stored = claims_in_outputs(item.cell.get("outputs", []))
        fresh = claims_in_outputs(item.test_outputs or [])
        problems = compare_claims(stored, fresh)
        if problems:
            pytest.fail(f"cell {item.cell_num}: " + "\n".join(problems), pytrace=False)
    return result
