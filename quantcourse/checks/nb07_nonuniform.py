"""Checkers for the exercises of ``07_nonuniform.ipynb``."""

from __future__ import annotations

import math

import torch

from ..nonuniform import log_levels, log_quantize, nf4_levels
from ._core import (
    CheckFailed,
    as_tensor,
    call,
    checker,
    expect_close,
    fmt,
    hint_for,
    one_number,
    passed,
)

# --------------------------------------------------------------------------- NormalFloat levels


def _nf_reference(bits: int) -> torch.Tensor:
    """QLoRA's construction at any width: 2^(b-1) positive levels, 2^(b-1) - 1 negative, 0."""
    n = 2**bits
    p_max = 1 - (1 / (2 * (n - 1)) + 1 / (2 * n)) / 2
    half = n // 2
    pos = torch.special.ndtri(torch.linspace(0.5, p_max, half + 1, dtype=torch.float64)[1:])
    neg = -torch.special.ndtri(torch.linspace(0.5, p_max, half, dtype=torch.float64)[1:])
    levels = torch.cat([neg, torch.zeros(1, dtype=torch.float64), pos]) / pos.max()
    return torch.sort(levels).values


def _nf_hint(got: torch.Tensor, bits: int) -> str:
    g = got.double()
    if g.max().item() > 1 + 1e-6 or g.min().item() < -1 - 1e-6:
        return "scale each half so that its outermost level is exactly 1 (or -1)"
    if not bool((g == 0).any()):
        return "the levels must include an exact 0"
    if torch.allclose(g, -g.flip(0), atol=1e-6):
        return ("the halves are asymmetric: 2^(b-1) positive levels but only 2^(b-1) - 1 "
                "negative ones, so that 0 is a level and all 2^b codes are used")
    if bits != 4:
        p4 = 1 - (1 / 30 + 1 / 32) / 2
        n = 2**bits
        half = n // 2
        pos = torch.special.ndtri(torch.linspace(0.5, p4, half + 1, dtype=torch.float64)[1:])
        neg = -torch.special.ndtri(torch.linspace(0.5, p4, half, dtype=torch.float64)[1:])
        fixed = torch.sort(torch.cat([neg, torch.zeros(1, dtype=torch.float64), pos])
                           / pos.max()).values
        if torch.allclose(g, fixed, atol=1e-5):
            return ("the outermost probability depends on the bit width: it averages "
                    "1/(2(2^b - 1)) and 1/(2 * 2^b), which are 1/30 and 1/32 only at 4 bits")
    return ("positive levels: normal quantiles at 2^(b-1) equally spaced probabilities from "
            "just above 0.5 up to p_max; negative: 2^(b-1) - 1 of them, mirrored; each half "
            "divided by its largest quantile")


@checker
def check_nf_levels(answer) -> None:
    """``answer(bits)`` -> the ``2^bits`` NormalFloat levels of QLoRA's construction."""
    for bits in (4, 2, 3, 5):
        what = f"NormalFloat levels at {bits} bits"
        got = as_tensor(call(answer, bits, what=what), what)
        n = 2**bits
        if got.numel() != n:
            hint = ("2^b codes give 2^b levels: 2^(b-1) positive, 2^(b-1) - 1 negative and 0"
                    if got.numel() in (n - 1, n + 1) else f"{bits} bits index {n} levels")
            raise CheckFailed(f"{what}: expected {n} levels, got {got.numel()}. Hint: {hint}")
        if got.is_complex() or not got.is_floating_point():
            raise CheckFailed(f"{what}: expected float levels, got {got.dtype}")
        got = torch.sort(got.detach().reshape(-1).double()).values
        want = _nf_reference(bits)
        if bits == 4:
            want = nf4_levels().double()
        if not torch.allclose(got, want, rtol=0, atol=2e-6):
            expect_close(got, want, what, rtol=0, atol=2e-6, hint=_nf_hint(got, bits))
    passed("your levels match QLoRA's construction at 2, 3, 4 and 5 bits "
           "(and qc.nf4_levels() at 4)")


# --------------------------------------------------------------------------- log zero threshold

_ZERO_CASES = [(4, 0), (4, 1), (3, 0), (5, 0), (5, 2), (2, 0), (8, 1)]


def _zero_reference(bits: int, frac_bits: int) -> float:
    return float(log_levels(bits, frac_bits=frac_bits).double()[1]) / 2


def _zero_hint(got: float, bits: int, frac_bits: int) -> str:
    k = 2 ** (bits - 1) - 1
    step = 2 ** (1 / 2**frac_bits)
    smallest = 2 ** (-(k - 1) / 2**frac_bits)
    variants = [
        (smallest, "a weight is rounded to the NEAREST level: below the smallest level it may "
                   "still be closer to it than to 0; the threshold is halfway"),
        (smallest / math.sqrt(step), "the rounding is to the nearest level in value, not in "
                                     "exponent: the threshold is the arithmetic midpoint"),
        (2 ** (-k / 2**frac_bits) / 2, "the largest level is the scale itself (exponent 0), "
                                       "so there are K - 1 steps below it, not K"),
        (2.0 ** -(k - 1) / 2, "with fractional bits the levels are 2^(1/2^f) apart, so the "
                              "exponent steps are 1/2^f"),
    ]
    return hint_for(got, [(hint, value) for value, hint in variants], rtol=1e-6, atol=1e-9,
                    want=_zero_reference(bits, frac_bits),
                    default="find the smallest non-zero level of the grid and the point where 0 "
                            "is nearer")


@checker
def check_log_zero_threshold(answer) -> None:
    """``answer(bits, frac_bits)`` -> the |w| / scale at or below which log_quantize gives 0."""
    for bits, frac_bits in _ZERO_CASES:
        what = f"zero threshold of a {bits}-bit log grid with frac_bits={frac_bits}"
        got = float(one_number(call(answer, bits, frac_bits, what=what), what))
        want = _zero_reference(bits, frac_bits)
        # the package must agree: just above the threshold is not 0, at it is
        w = torch.tensor([1.0, want, want * (1 + 1e-6)], dtype=torch.float64).float()
        codes = log_quantize(w, bits, frac_bits=frac_bits).codes
        assert int(codes[1]) == 0 and int(codes[2]) == 1, "log_quantize disagrees with the checker"
        if not math.isfinite(got) or abs(got - want) > 1e-7 * want + 1e-12:
            raise CheckFailed(f"{what}: expected {fmt(want)}, got {fmt(got)}. "
                              f"Hint: {_zero_hint(got, bits, frac_bits)}")
    passed("your thresholds match qc.log_quantize: half the smallest level, "
           "2^(-(K-1)/2^f) / 2, from 2 to 8 bits")


# --------------------------------------------------------------------------- centroid gradients


def _grad_cases() -> list[tuple[str, torch.Tensor, torch.Tensor, int]]:
    gen = torch.Generator().manual_seed(7)
    cases = []
    for rows, cols, k in ((3, 10, 4), (8, 64, 16), (1, 5, 2), (5, 7, 8)):
        grad = torch.randn(rows, cols, generator=gen)
        codes = torch.randint(0, k, (rows, cols), generator=gen)
        cases.append((f"{rows} rows x {cols} weights, {k} centroids per row", grad, codes, k))
    grad = torch.randn(2, 6, generator=gen)
    codes = torch.tensor([[0, 0, 2, 2, 2, 0], [1, 1, 1, 1, 1, 1]])
    cases.append(("2 rows where some centroids are unused", grad, codes, 4))
    return cases


def _grad_reference(grad: torch.Tensor, codes: torch.Tensor, k: int) -> torch.Tensor:
    book = torch.zeros(grad.shape[0], k, dtype=torch.float64, requires_grad=True)
    w = book.gather(1, codes.long())  # the weights as the codebook lookup builds them
    (w * grad.double()).sum().backward()  # d(loss)/d(w) = grad
    return book.grad


def _grad_hint(got: torch.Tensor, grad, codes, k) -> str:
    g = got.double()
    want = _grad_reference(grad, codes, k)
    counts = torch.zeros(grad.shape[0], k, dtype=torch.float64).scatter_add_(
        1, codes.long(), torch.ones_like(grad, dtype=torch.float64))
    return hint_for(g, {
        "sum the gradients of the weights that share a centroid; do not average them":
            want / counts.clamp(min=1),
        "each row has its own codebook: sum only over the weights of that row":
            want.sum(0, keepdim=True).expand_as(want),
    }, atol=1e-6, default="gradient of centroid j of row c = sum of grad[c, i] over the i with "
                          "codes[c, i] == j")


@checker
def check_centroid_grad(answer) -> None:
    """``answer(grad, codes, k)`` -> ``(rows, k)``: per-row sums of ``grad`` by code."""
    for label, grad, codes, k in _grad_cases():
        what = f"centroid gradients for {label}"
        got = as_tensor(call(answer, grad.clone(), codes.clone(), k, what=what), what)
        want = _grad_reference(grad, codes, k)
        if got.shape != want.shape:
            hint = ("one codebook per row: return shape (rows, k)" if got.numel() == k
                    else f"return one value per centroid per row: {tuple(want.shape)}")
            raise CheckFailed(f"{what}: expected shape {tuple(want.shape)}, got "
                              f"{tuple(got.shape)}. Hint: {hint}")
        if got.is_complex() or not got.is_floating_point():
            raise CheckFailed(f"{what}: expected float gradients, got {got.dtype}")
        if not torch.allclose(got.detach().double(), want, rtol=1e-5, atol=1e-5):
            expect_close(got.double(), want, what, rtol=1e-5, atol=1e-5,
                         hint=_grad_hint(got.detach(), grad, codes, k))
    passed("your sums match autograd through the codebook lookup, row by row, unused "
           "centroids included")
