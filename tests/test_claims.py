"""qc.claim and the nbval plugin that compares recorded claims with a fresh run."""

from __future__ import annotations

import copy as copy_module
import re
import subprocess
import sys

import nbformat
import pytest
import torch
from nbformat.v4 import new_code_cell, new_notebook

import quantcourse as qc
from quantcourse.claims import CLAIM_MIME, claims_in_outputs

from .nbval_claims import compare_claims
from .notebook_utils import KERNEL, ROOT


def test_claim_returns_the_value_and_prints_one_line(capsys):
    assert qc.claim("ratio", 0.25, lo=0.2, hi=0.3, tol=0.01) == 0.25
    assert qc.claim("count", torch.tensor(7), tol=0) == 7
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["claim ratio = 0.25  (in [0.2, 0.3]; machines agree within ±0.01)",
                     "claim count = 7  (recorded; exact on every machine)"]


@pytest.mark.parametrize("value, lo, hi, word", [(0.19, 0.2, None, ">= 0.2"),
                                                 (0.31, None, 0.3, "<= 0.3"),
                                                 (5.0, 0.0, 1.0, "in [0, 1]")])
def test_a_claim_outside_its_bounds_fails_with_the_bound(value, lo, hi, word):
    with pytest.raises(AssertionError, match=re.escape(word)):
        qc.claim("x", value, lo=lo, hi=hi, tol=0.1)


def test_bounds_are_inclusive():
    assert qc.claim("edge", 0.5, lo=0.5, hi=0.5, tol=0) == 0.5


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(name="two words", value=1.0, tol=0), ValueError, "identifier"),
    (dict(name="b", value=True, tol=0), TypeError, "real number"),
    (dict(name="t", value=torch.ones(2), tol=0), TypeError, "shape"),
    (dict(name="c", value=1 + 2j, tol=0), TypeError, "real number"),
    (dict(name="n", value=float("nan"), tol=0), ValueError, "finite"),
    (dict(name="i", value=float("inf"), tol=0), ValueError, "finite"),
    (dict(name="neg", value=1.0, tol=-0.1), ValueError, "tol"),
    (dict(name="none", value=1.0, tol=None), ValueError, "tol"),
    (dict(name="order", value=1.0, lo=2.0, hi=1.0, tol=0), ValueError, "above"),
    (dict(name="lo", value=1.0, lo="0", tol=0), TypeError, "lo"),
])
def test_bad_claims_fail_clearly(kwargs, error, match):
    with pytest.raises(error, match=match):
        qc.claim(**kwargs)


def _outputs(*records):
    return [{"output_type": "display_data", "data": {"text/plain": "x", CLAIM_MIME: r}}
            for r in records] + [{"output_type": "stream", "name": "stdout", "text": "hi"}]


def rec(name="a", value=1.0, lo=None, hi=None, tol=0.1):
    return {"name": name, "value": value, "lo": lo, "hi": hi, "tol": tol}


def test_claims_in_outputs_reads_records_and_rejects_duplicates():
    assert claims_in_outputs(_outputs(rec("a"), rec("b"))) == {"a": rec("a"), "b": rec("b")}
    assert claims_in_outputs([]) == {}
    with pytest.raises(ValueError, match="twice"):
        claims_in_outputs(_outputs(rec("a"), rec("a")))


@pytest.mark.parametrize("fresh, problem", [
    ({"a": rec(value=1.05)}, None),
    ({"a": rec(value=0.9)}, None),                       # exactly tol away: allowed
    ({"a": rec(value=1.2)}, "more than its tol"),
    ({}, "did not make it"),
    ({"a": rec(), "b": rec("b")}, "not recorded"),
    ({"a": rec(tol=0.5)}, "tol is 0.5"),
    ({"a": rec(lo=0.5)}, "lo is 0.5"),
])
def test_compare_claims(fresh, problem):
    problems = compare_claims({"a": rec()}, fresh)
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0], problems


def test_exact_claims_must_match_exactly():
    assert compare_claims({"n": rec("n", 3, tol=0)}, {"n": rec("n", 3, tol=0)}) == []
    assert compare_claims({"n": rec("n", 3, tol=0)}, {"n": rec("n", 4, tol=0)})


@pytest.mark.notebook
def test_nbval_plugin_end_to_end(tmp_path):
    """A real kernel records claims; nbval with the plugin passes, then fails when stale."""
    nbclient = pytest.importorskip("nbclient")
    nb = new_notebook(cells=[
        new_code_cell("import quantcourse as qc\nx = 0.5"),
        new_code_cell("_ = qc.claim('half', x * 1.0000001, lo=0.4, tol=0.01)\nprint(x)"),
        new_code_cell("print(2 + 2)"),
    ])
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": KERNEL, "language": "python"}
    nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=120).execute()
    recorded = claims_in_outputs(nb.cells[1].outputs)
    assert recorded["half"]["value"] == pytest.approx(0.50000005) and recorded["half"]["lo"] == 0.4

    def nbval(edit=None) -> subprocess.CompletedProcess:
        copy = nbformat.from_dict(copy_module.deepcopy(nb))
        if edit:
            edit(copy)
        path = tmp_path / "t.ipynb"
        nbformat.write(copy, path)
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval",
             "--nbval-current-env", "-p", "tests.nbval_claims", str(path)],
            cwd=ROOT, capture_output=True, text=True, timeout=300)

    ok = nbval()
    assert ok.returncode == 0, ok.stdout[-2000:]

    def moved(copy):   # the recorded value is off by more than tol: a stale notebook
        copy.cells[1].outputs[0]["data"][CLAIM_MIME]["value"] = 0.52

    def lost(copy):    # the committed notebook holds a claim the code no longer makes
        copy.cells[1].outputs.insert(0, nbformat.from_dict(
            {"output_type": "display_data", "metadata": {},
             "data": {"text/plain": "claim gone = 1", CLAIM_MIME: rec("gone", 1.0)}}))

    def text(copy):    # cells without claims are still compared as text
        copy.cells[2].outputs[0]["text"] = "5\n"

    for edit, words in ((moved, "more than its tol"), (lost, "did not make it"),
                        (text, "Cell outputs differ")):
        bad = nbval(edit)
        assert bad.returncode != 0 and words in bad.stdout, (edit.__name__, bad.stdout[-2000:])
