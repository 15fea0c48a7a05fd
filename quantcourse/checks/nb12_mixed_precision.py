"""Checkers for the exercises of ``12_mixed_precision.ipynb``."""

from __future__ import annotations

import itertools
import math
import random

import torch
from torch import nn

from ..mixed import allocate_bits, layer_nbytes
from ._core import CheckFailed, call, checker, exercise_open, fmt, passed

# --------------------------------------------------------------------------- bytes of a layer

_LAYERS = [
    ("Linear(3, 5)", lambda: nn.Linear(3, 5)),
    ("Linear(64, 10)", lambda: nn.Linear(64, 10)),
    ("Linear(13, 7) without bias", lambda: nn.Linear(13, 7, bias=False)),
    ("Conv2d(1, 16, 3)", lambda: nn.Conv2d(1, 16, 3)),
    ("Conv2d(3, 7, kernel_size=(3, 5))", lambda: nn.Conv2d(3, 7, (3, 5))),
]
_FORMATS = (2, 3, 4, 5, 6, 7, 8, "fp16", "bf16")


def _bytes_hint(got: float, layer: nn.Module, f) -> str:
    w = layer.weight
    n, rows = w.numel(), w.shape[0]
    if isinstance(f, str):
        if got == 4 * n:
            return "fp16 and bf16 are 16-bit formats: 2 bytes a weight, not 4"
        return "a 16-bit float weight takes 2 bytes and needs no scale"
    per_row = w[0].numel()
    cands = [
        (math.ceil(n * f / 8), "add one float32 scale (4 bytes) per output channel"),
        (rows * math.ceil(per_row * f / 8) + 4 * rows,
         "codes are packed with no padding between channels: round up once, for the whole "
         "weight"),
        (math.ceil(n * f / 8) + 4 * w.shape[1],
         "one scale per OUTPUT channel (axis 0 of the weight), not per input channel"),
        (math.ceil(n * f / 8) + 8 * rows, "a float32 scale is 4 bytes"),
        (math.ceil(n * f / 8) + 4 * rows + rows,
         "symmetric grids store no zero point"),
        (n * f / 8 + 4 * rows, "a part-filled last byte still takes a whole byte: round up"),
    ]
    for value, hint in cands:
        if abs(got - value) < 1e-9:
            return hint
    return "packed codes ceil(n * bits / 8) plus 4 bytes per output channel"


@checker
def check_layer_bytes(answer) -> None:
    """``answer(layer, fmt)`` -> bytes of the layer's weight stored at ``fmt``."""
    torch.manual_seed(0)
    for label, make in _LAYERS:
        layer = make()
        want_table = layer_nbytes(nn.Sequential(layer), _FORMATS)["0"]
        for f in _FORMATS:
            what = f"bytes of a {label} weight at {f}" + (" bits" if isinstance(f, int) else "")
            got = call(answer, layer, f, what=what)
            if isinstance(got, torch.Tensor) and got.numel() == 1:
                got = got.item()
            if isinstance(got, bool) or not isinstance(got, (int, float)):
                raise CheckFailed(f"{what}: expected a number of bytes, got "
                                  f"{type(got).__name__}")
            want = want_table[f]
            if got != want:
                raise CheckFailed(f"{what}: expected {want}, got {fmt(float(got))}. "
                                  f"Hint: {_bytes_hint(float(got), layer, f)}")
    passed("your byte counts match qc.layer_nbytes for Linear and Conv2d layers, "
           "2 to 8 bits and both 16-bit floats")


# --------------------------------------------------------------------------- random problems

_PROBLEM_FORMATS = (2, 3, 4, 6, 8, "fp16")


def _problem(rng: random.Random, n_layers: int, small: bool = False):
    sens, sizes = {}, {}
    for i in range(n_layers):
        rows = rng.randint(2, 8 if small else 32)
        n = rows * rng.randint(2, 12 if small else 64)
        c = 10 ** rng.uniform(-2, 1)
        name = f"layer{i}"
        sizes[name] = {f: 2 * n if isinstance(f, str) else math.ceil(n * f / 8) + 4 * rows
                       for f in _PROBLEM_FORMATS}
        sens[name] = {f: c * 4.0 ** -(11 if isinstance(f, str) else f) * rng.uniform(0.5, 1.5)
                      for f in _PROBLEM_FORMATS}
    lo = sum(min(v.values()) for v in sizes.values())
    hi = sum(max(v.values()) for v in sizes.values())
    return sens, sizes, rng.randint(lo, lo + (hi - lo) // 2)


def _greedy_reference(sens, sizes, budget):
    alloc = {n: min(sizes[n], key=lambda f: (sizes[n][f], sens[n][f])) for n in sens}
    used = sum(sizes[n][f] for n, f in alloc.items())
    while True:
        best, rate = None, 0.0
        for n, cur in alloc.items():
            for f in sens[n]:
                extra, gain = sizes[n][f] - sizes[n][cur], sens[n][cur] - sens[n][f]
                if extra > 0 and gain > 0 and used + extra <= budget and gain / extra > rate:
                    best, rate = (n, f, extra), gain / extra
        if best is None:
            return alloc
        alloc[best[0]] = best[1]
        used += best[2]


def _as_allocation(got, sens, what: str) -> dict:
    if not isinstance(got, dict):
        raise CheckFailed(f"{what}: expected a {{layer: format}} dict, got {type(got).__name__}")
    if set(got) != set(sens):
        raise CheckFailed(f"{what}: expected one format for each of the layers "
                          f"{sorted(sens)}, got layers {sorted(got)}")
    bad = [n for n, f in got.items() if f not in sens[n]]
    if bad:
        raise CheckFailed(f"{what}: layer {bad[0]!r} got {got[bad[0]]!r}, which is not one of "
                          f"its formats {list(sens[bad[0]])}")
    return got


@checker
def check_greedy_allocation(answer) -> None:
    """``answer(sensitivity, sizes, budget)`` -> greedy-by-loss-per-byte ``{layer: format}``."""
    rng = random.Random(12)
    gaps = []
    for case in range(40):
        sens, sizes, budget = _problem(rng, rng.randint(2, 6))
        what = f"random problem {case} ({len(sens)} layers, budget {budget} bytes)"
        got = _as_allocation(call(answer, sens, sizes, budget, what=what), sens, what)
        used = sum(sizes[n][f] for n, f in got.items())
        if used > budget:
            raise CheckFailed(f"{what}: your allocation needs {used} bytes, which exceeds the "
                              f"budget of {budget}. Hint: take an upgrade only if its extra "
                              "bytes still fit")
        want = _greedy_reference(sens, sizes, budget)
        if got != want:
            loss = sum(sens[n][f] for n, f in got.items())
            wloss = sum(sens[n][f] for n, f in want.items())
            diff = next(n for n in sens if got[n] != want[n])
            hint = ("rank upgrades by the drop saved PER EXTRA BYTE, not by the drop saved"
                    if loss != wloss else "check the tie-breaking order")
            if all(got[n] == min(sizes[n], key=sizes[n].get) for n in sens):
                hint = "keep upgrading until no upgrade fits the budget"
            raise CheckFailed(f"{what}: layer {diff!r} should end at {want[diff]!r}, yours is "
                              f"at {got[diff]!r} (predicted loss {fmt(loss)} vs greedy's "
                              f"{fmt(wloss)}). Hint: {hint}")
        exact = allocate_bits(sens, sizes, budget, cells=1 << 16).predicted_loss
        gaps.append(sum(sens[n][f] for n, f in want.items()) / exact - 1)
    worse = sum(g > 1e-9 for g in gaps)
    passed(f"your greedy matches on 40 random problems; it is above the exact optimum of "
           f"qc.allocate_bits on {worse} of them, by up to {100 * max(gaps):.0f}%")


# --------------------------------------------------------------------------- pinned layers


def _at_least_8(f) -> bool:
    return isinstance(f, str) or f >= 8


def _pinned_cases():
    rng = random.Random(1212)
    cases = []
    for _ in range(12):
        sens, sizes, budget = _problem(rng, rng.randint(2, 4), small=True)
        names = list(sens)
        pinned = {names[0], names[-1]}
        floor = sum(min(v for f, v in sizes[n].items() if n not in pinned or _at_least_8(f))
                    for n in names)
        cases.append((sens, sizes, max(budget, floor + rng.randint(0, 40)), pinned))
    # a pinned layer where fp16 is far better than int8 and the budget affords it
    sens = {"first": {8: 1.0, 4: 5.0, 2: 9.0, "fp16": 1e-6},
            "middle": {8: 0.1, 4: 0.5, 2: 3.0, "fp16": 1e-7}}
    sizes = {"first": {8: 120, 4: 70, 2: 45, "fp16": 200},
             "middle": {8: 520, 4: 270, 2: 145, "fp16": 1000}}
    cases.append((sens, sizes, 480, {"first"}))
    return cases


def _best_pinned(sens, sizes, budget, pinned) -> float | None:
    names = list(sens)
    options = [[f for f in sens[n] if n not in pinned or _at_least_8(f)] for n in names]
    best = None
    for combo in itertools.product(*options):
        if sum(sizes[n][f] for n, f in zip(names, combo, strict=True)) <= budget:
            loss = sum(sens[n][f] for n, f in zip(names, combo, strict=True))
            best = loss if best is None or loss < best else best
    return best


@checker
def check_allocation_with_floor(answer) -> None:
    """``answer(sensitivity, sizes, budget, pinned)`` -> the best ``qc.Allocation`` that keeps
    every pinned layer at 8 bits or a 16-bit float."""
    for case, (sens, sizes, budget, pinned) in enumerate(_pinned_cases()):
        what = f"problem {case} (budget {budget} bytes, pinned {sorted(pinned)})"
        try:
            got = call(answer, sens, sizes, budget, pinned, what=what)
        except CheckFailed as err:
            if "raised ValueError" not in str(err):
                raise
            raise CheckFailed(f"{err}; but an allocation that keeps the pinned layers at 8 "
                              "bits or more fits this budget. Hint: only the pinned layers are "
                              "restricted; the others keep every format") from None
        bits = getattr(got, "bits", None)
        if not isinstance(bits, dict):
            raise CheckFailed(f"{what}: expected a qc.Allocation (with .bits), got "
                              f"{type(got).__name__}")
        _as_allocation(bits, sens, what)
        low = [n for n in pinned if not _at_least_8(bits[n])]
        if low:
            raise CheckFailed(f"{what}: pinned layer {low[0]!r} got {bits[low[0]]!r}. Hint: "
                              "restrict the pinned layers' formats before allocating")
        used = sum(sizes[n][f] for n, f in bits.items())
        if used > budget:
            raise CheckFailed(f"{what}: your allocation needs {used} bytes, over the budget")
        loss = sum(sens[n][f] for n, f in bits.items())
        want = _best_pinned(sens, sizes, budget, pinned)
        if loss > want * (1 + 1e-9) + 1e-15:
            floats = any(isinstance(bits[n], int) and any(isinstance(f, str) for f in sens[n])
                         for n in pinned)
            hint = ("a 16-bit float format also counts as at least 8 bits" if floats
                    else "only the pinned layers are restricted; the others keep every format")
            raise CheckFailed(f"{what}: predicted loss {fmt(loss)}, but {fmt(want)} is "
                              f"possible under the same constraint. Hint: {hint}")
    sens, sizes, _, pinned = _pinned_cases()[-1]
    what = "a budget the pinned layers cannot meet"
    try:
        answer(sens, sizes, 260, pinned)
    except NotImplementedError:
        raise exercise_open(what) from None
    except ValueError:
        pass
    except Exception as exc:
        raise CheckFailed(f"{what}: expected a ValueError, got {type(exc).__name__}: {exc}") \
            from exc
    else:
        raise CheckFailed(f"{what}: 260 bytes cannot hold 'first' at 8 bits (120 B) and "
                          "'middle' at its smallest (145 B): expected a ValueError. Hint: "
                          "qc.allocate_bits raises one when the budget is below the smallest "
                          "allowed allocation")
    passed("your allocations keep the pinned layers at 8 bits or more and are the best "
           "possible under each budget (checked by brute force)")
