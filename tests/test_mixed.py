"""quantcourse.mixed: sizes against hand formulas and qc.quantized_model_nbytes, sensitivity
against quantize_model_weights copies, the knapsack against brute force (hypothesis), the
Pareto front against its definition, and bad input (clear errors before any work)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import quantcourse as qc


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(64, 8)
        self.head = nn.Linear(8, 3, bias=False)

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv(x)), 2).flatten(1)
        return self.head(torch.relu(self.fc(x)))


def _tiny(seed: int = 0) -> Tiny:
    torch.manual_seed(seed)
    return Tiny().eval()


X = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(3))


def _mse_quality(ref_model):
    with torch.no_grad():
        ref = ref_model(X)

    def quality(m):
        with torch.no_grad():
            return -float(((m(X) - ref) ** 2).mean())
    return quality


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same_state(model, state):
    now = model.state_dict()
    return set(now) == set(state) and all(torch.equal(now[k], state[k]) for k in state)


# ---------------------------------------------------------------- sizes


def test_layer_nbytes_matches_hand_formulas():
    m = _tiny()
    sizes = qc.layer_nbytes(m, (2, 3, 4, 8, "fp16", "bf16"))
    shapes = {"conv": (4, 9), "fc": (8, 64), "head": (3, 8)}   # (rows, weights per row)
    assert list(sizes) == ["conv", "fc", "head"]
    for name, (rows, per_row) in shapes.items():
        n = rows * per_row
        for b in (2, 3, 4, 8):
            assert sizes[name][b] == math.ceil(n * b / 8) + 4 * rows, (name, b)
        assert sizes[name]["fp16"] == sizes[name]["bf16"] == 2 * n


def test_layer_nbytes_other_granularities():
    m = _tiny()
    per_tensor = qc.layer_nbytes(m, (4,), granularity="tensor")
    assert per_tensor["fc"][4] == 8 * 64 * 4 // 8 + 4
    grouped = qc.layer_nbytes(m, (4,), granularity="group", group_size=5)
    assert grouped["conv"][4] == math.ceil(36 * 4 / 8) + 4 * 4 * 2      # 9 per row: 2 groups
    with torch.no_grad():
        m.fc.weight.add_(0.05)                    # lopsided ranges: non-zero zero points
    asym = qc.layer_nbytes(m, (4,), symmetric=False, layers=["fc"])
    assert asym == {"fc": {4: 8 * 64 // 2 + 4 * 8 + 8}}                # + one byte each


def test_allocation_nbytes_agrees_with_quantized_model_nbytes():
    m = _tiny()
    layers = list(qc.quantizable_layers(m))
    for b in (2, 4, 8):
        assert qc.allocation_nbytes(m, dict.fromkeys(layers, b)) == qc.quantized_model_nbytes(m, b)
    assert qc.allocation_nbytes(m, {}) == qc.model_nbytes(m)
    mixed = {"conv": "fp16", "fc": 3}
    want = qc.model_nbytes(m) - 4 * (36 + 512) + 2 * 36 + (512 * 3 // 8 + 4 * 8)
    assert qc.allocation_nbytes(m, mixed) == want


# ---------------------------------------------------------------- sensitivity


def test_sensitivity_matches_quantized_copies_and_leaves_the_model_alone():
    m = _tiny()
    before = _state(m)
    quality = _mse_quality(m)
    cands = (8, 4, 2, "bf16")
    sens = qc.layer_sensitivity(m, quality, cands)
    assert _same_state(m, before)
    assert list(sens) == ["conv", "fc", "head"] and all(list(v) == list(cands) for v in sens.values())
    base = quality(m)
    for name in sens:
        for c in cands:
            copy = qc.quantize_model_weights(m, {name: c})
            assert sens[name][c] == pytest.approx(base - quality(copy), rel=1e-9, abs=1e-15)
    assert all(sens[n][2] > sens[n][4] > sens[n][8] > 0 for n in sens)


def test_sensitivity_restores_weights_after_an_exception():
    m = _tiny()
    before = _state(m)
    calls = []

    def quality(model):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return 0.0

    with pytest.raises(RuntimeError, match="boom"):
        qc.layer_sensitivity(m, quality, (4, 2))
    assert _same_state(m, before)


@pytest.mark.parametrize("kwargs, match", [
    (dict(candidates=()), "candidates is empty"),
    (dict(candidates=(8, 1)), "between 2 and 16"),
    (dict(candidates=(8, "fp8")), "fp16"),
    (dict(candidates=(8, 8)), "repeats"),
    (dict(candidates=(8,), layers=["fc", "nope"]), "no quantizable layer named 'nope'"),
    (dict(candidates=(8,), granularity="group"), "group_size"),
])
def test_sensitivity_bad_input_fails_before_any_evaluation(kwargs, match):
    m = _tiny()
    before = _state(m)
    calls = []
    with pytest.raises(ValueError, match=match):
        qc.layer_sensitivity(m, lambda model: calls.append(1) or 0.0, **kwargs)
    assert not calls and _same_state(m, before)


def test_sensitivity_rejects_a_non_finite_quality():
    m = _tiny()
    before = _state(m)
    with pytest.raises(ValueError, match="finite"):
        qc.layer_sensitivity(m, lambda model: float("nan"), (8,))
    with pytest.raises(TypeError, match="function"):
        qc.layer_sensitivity(m, 3.0, (8,))
    assert _same_state(m, before)


# ---------------------------------------------------------------- the knapsack


def _brute_force(sens, sizes, budget):
    names = list(sens)
    best = None
    for combo in itertools.product(*(list(sens[n]) for n in names)):
        nbytes = sum(sizes[n][f] for n, f in zip(names, combo, strict=True))
        loss = sum(sens[n][f] for n, f in zip(names, combo, strict=True))
        if nbytes <= budget and (best is None or loss < best):
            best = loss
    return best


@st.composite
def problems(draw, max_layers=4, max_options=4, max_size=60):
    n_layers = draw(st.integers(1, max_layers))
    sens, sizes = {}, {}
    for i in range(n_layers):
        k = draw(st.integers(1, max_options))
        fmts = [2, 3, 4, 8, "fp16", "bf16"][:k]
        sizes[f"l{i}"] = {f: draw(st.integers(0, max_size)) for f in fmts}
        sens[f"l{i}"] = {f: draw(st.floats(-1, 10, allow_nan=False, width=32)) for f in fmts}
    lo = sum(min(v.values()) for v in sizes.values())
    hi = sum(max(v.values()) for v in sizes.values())
    budget = draw(st.integers(lo, hi + 5))
    return sens, sizes, budget


@settings(max_examples=200, deadline=None)
@given(problems())
def test_allocate_bits_is_the_brute_force_optimum(problem):
    sens, sizes, budget = problem
    a = qc.allocate_bits(sens, sizes, budget)            # slack <= 4096 cells: exact
    assert list(a.bits) == list(sens)
    assert a.nbytes == sum(sizes[n][f] for n, f in a.bits.items()) <= budget
    assert a.predicted_loss == pytest.approx(sum(sens[n][f] for n, f in a.bits.items()))
    assert a.predicted_loss == pytest.approx(_brute_force(sens, sizes, budget), abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(problems(max_size=5000), st.integers(1, 16))
def test_coarse_cells_still_fit_and_never_beat_the_optimum(problem, cells):
    sens, sizes, budget = problem
    a = qc.allocate_bits(sens, sizes, budget, cells=cells)
    assert a.nbytes <= budget
    assert a.predicted_loss >= _brute_force(sens, sizes, budget) - 1e-9


@settings(max_examples=60, deadline=None)
@given(problems(), st.integers(0, 50))
def test_a_larger_budget_never_predicts_more_loss(problem, more):
    sens, sizes, budget = problem
    a = qc.allocate_bits(sens, sizes, budget)
    b = qc.allocate_bits(sens, sizes, budget + more)
    assert b.predicted_loss <= a.predicted_loss + 1e-9


def test_where_greedy_by_loss_per_byte_fails_the_knapsack_does_not():
    # greedy takes a's cheap upgrade (best ratio) and then cannot afford b's; exact skips it
    sens = {"a": {2: 1.0, 8: 0.0}, "b": {2: 10.0, 8: 0.0}}
    sizes = {"a": {2: 0, 8: 1}, "b": {2: 0, 8: 10}}
    a = qc.allocate_bits(sens, sizes, 10)
    assert a.bits == {"a": 2, "b": 8} and a.predicted_loss == 1.0 and a.nbytes == 10


def test_digits_allocation_applies_and_meets_its_budget():
    cnn = qc.digits_cnn()
    cands = (8, 4, 2, "fp16")
    sizes = qc.layer_nbytes(cnn, cands)
    sens = {n: {c: 1.0 / (2 ** c if isinstance(c, int) else 1e6) for c in cands} for n in sizes}
    budget = sum(v[4] for v in sizes.values())
    a = qc.allocate_bits(sens, sizes, budget)
    mixed = qc.quantize_model_weights(cnn, a.bits)
    rest = qc.model_nbytes(cnn) - 4 * sum(m.weight.numel() for m in qc.quantizable_layers(cnn).values())
    assert qc.allocation_nbytes(cnn, a.bits) == a.nbytes + rest
    assert a.nbytes <= budget
    for name, layer in qc.quantizable_layers(mixed).items():
        want = qc.quantize_weight(qc.quantizable_layers(cnn)[name].weight.detach(), a.bits[name])[0]
        assert torch.equal(layer.weight, want)


def test_budget_below_the_smallest_model_fails_clearly():
    cnn = qc.digits_cnn()
    before = _state(cnn)
    sizes = qc.layer_nbytes(cnn, (8, 2))
    smallest = sum(v[2] for v in sizes.values())
    sens = {n: {8: 0.0, 2: 1.0} for n in sizes}
    with pytest.raises(ValueError, match=f"below the smallest possible allocation, {smallest:,}"):
        qc.allocate_bits(sens, sizes, smallest - 1)
    assert qc.allocate_bits(sens, sizes, smallest).bits == dict.fromkeys(sizes, 2)
    assert _same_state(cnn, before)


@pytest.mark.parametrize("sens, sizes, budget, err, match", [
    ({}, {}, 10, ValueError, "empty"),
    ({"a": {8: 0.1}}, {"b": {8: 1}}, 10, ValueError, "no sizes for layer"),
    ({"a": {}}, {"a": {}}, 10, ValueError, "no candidate formats"),
    ({"a": {8: 0.1, 4: 0.2}}, {"a": {8: 1}}, 10, ValueError, "no size for format"),
    ({"a": {8: float("nan")}}, {"a": {8: 1}}, 10, ValueError, "not finite"),
    ({"a": {8: 0.1}}, {"a": {8: -1}}, 10, ValueError, "non-negative"),
    ({"a": {8: 0.1}}, {"a": {8: 1}}, 10.5, TypeError, "integer"),
    ({"a": {8: 0.1}}, [("a", 1)], 10, TypeError, "mappings"),
])
def test_allocate_bits_bad_input(sens, sizes, budget, err, match):
    with pytest.raises(err, match=match):
        qc.allocate_bits(sens, sizes, budget)


def test_allocation_nbytes_bad_input():
    m = _tiny()
    with pytest.raises(ValueError, match="no quantizable layer named 'nope'"):
        qc.allocation_nbytes(m, {"nope": 4})
    with pytest.raises(ValueError, match="between 2 and 16"):
        qc.allocation_nbytes(m, {"fc": 1})
    with pytest.raises(TypeError, match="mapping"):
        qc.allocation_nbytes(m, [("fc", 4)])


# ---------------------------------------------------------------- Pareto front


def _dominated(i, s, loss):
    return any(s[j] <= s[i] and loss[j] <= loss[i] and (s[j] < s[i] or loss[j] < loss[i])
               for j in range(len(s)))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), max_size=30))
def test_pareto_front_matches_its_definition(points):
    s = [p[0] for p in points]
    loss = [p[1] for p in points]
    front = qc.pareto_front(s, loss)
    want = {(s[i], loss[i]) for i in range(len(s)) if not _dominated(i, s, loss)}
    assert {(s[i], loss[i]) for i in front} == want
    assert len(front) == len(want)                     # one index per distinct point
    assert [s[i] for i in front] == sorted(s[i] for i in front)
    for i in front:                                    # of identical points, the first
        assert i == min(j for j in range(len(s)) if (s[j], loss[j]) == (s[i], loss[i]))


def test_pareto_front_bad_input():
    assert qc.pareto_front([], []) == []
    with pytest.raises(ValueError, match="2 sizes but 1 losses"):
        qc.pareto_front([1, 2], [0.5])
    with pytest.raises(ValueError, match="NaN or infinite"):
        qc.pareto_front([1, 2], [0.5, float("nan")])
