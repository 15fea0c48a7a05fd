"""Checkers for the exercises of ``03_symmetric.ipynb``."""

from __future__ import annotations

import torch

from ..affine import QParams, quantize, symmetric_qparams
from ._core import (
    CheckFailed,
    as_tensor,
    call,
    checker,
    expect_close,
    expect_equal,
    fmt,
    hint_for,
    narrow_qmax,
    one_number,
    passed,
)

_EPS = torch.finfo(torch.float32).eps


# --------------------------------------------------------------------------- the scale


def _scale_cases() -> list[tuple[str, torch.Tensor, int]]:
    gen = torch.Generator().manual_seed(3)
    gauss = torch.randn(64, 32, generator=gen) * 0.05
    neg = gauss.clone()
    neg[3, 5] = -0.5  # the largest magnitude is a negative value
    relu = torch.relu(torch.randn(1000, generator=gen))
    return [
        ("a Gaussian weight matrix, 8 bits", gauss, 8),
        ("a tensor whose largest magnitude is negative, 8 bits", neg, 8),
        ("ReLU activations, 4 bits", relu, 4),
        ("a Gaussian weight matrix, 2 bits", gauss, 2),
        ("an all-zero tensor, 8 bits", torch.zeros(5, 7), 8),
    ]


def _scale_hint(got: torch.Tensor, x: torch.Tensor, bits: int) -> str:
    amax = float(x.abs().max())
    qmax = narrow_qmax(bits)
    g = float(got)
    if amax == 0.0:
        if g == 0.0 or g != g:
            return (
                "an all-zero tensor has max|x| = 0, so the scale is 0 and x / s is 0/0 = NaN; "
                "clamp the scale to at least torch.finfo(torch.float32).eps"
            )
        return "clamp the scale to at least torch.finfo(torch.float32).eps, as the package does"
    variants = [
        (amax / 2 ** (bits - 1),
         "you divided by 2^(b-1); the narrow grid's largest code is 2^(b-1) - 1, "
         "so s = max|x| / (2^(b-1) - 1)"),
        (amax / (qmax + 0.5),
         "that is the full-range (PyTorch observer) scale max|x| / (2^(b-1) - 0.5); "
         "the narrow range divides by 2^(b-1) - 1"),
        (float(x.max()) / qmax,
         "use the largest magnitude max|x| (x.abs().max()), not the largest value x.max()"),
        (2 * amax / (2**bits - 1),
         "that spreads 2 max|x| over 2^b - 1 steps; the symmetric scale maps max|x| "
         "to the code 2^(b-1) - 1"),
        (amax / (2**bits - 1),
         "that divides by 2^b - 1 (an unsigned grid); symmetric uses 2^(b-1) - 1"),
    ]
    return hint_for(g, [(hint, value) for value, hint in variants], rtol=1e-5,
                    default="s = max|x| / (2^(b-1) - 1), clamped to at least "
                            "torch.finfo(torch.float32).eps")


@checker
def check_symmetric_scale(answer) -> None:
    """``answer(x, bits)`` -> the narrow-range symmetric scale (a number or 0-d tensor)."""
    for label, x, bits in _scale_cases():
        what = f"scale for {label}"
        got = one_number(call(answer, x.clone(), bits, what=what), what)
        want = symmetric_qparams(x, bits).scale
        if not bool(torch.isfinite(got)):
            raise CheckFailed(
                f"{what}: expected {fmt(float(want))}, got {fmt(float(got))}. "
                f"Hint: {_scale_hint(got, x, bits)}"
            )
        expect_close(got, want, what, rtol=1e-5, atol=0.0, hint=_scale_hint(got, x, bits))
    passed(
        "your scale matches qc.symmetric_qparams on Gaussian, negative-peaked, ReLU "
        "and all-zero tensors at 2, 4 and 8 bits"
    )


# --------------------------------------------------------------------------- the codes


def _quantize_cases() -> list[tuple[str, torch.Tensor, QParams, int]]:
    gen = torch.Generator().manual_seed(4)
    gauss = torch.randn(40, 25, generator=gen) * 0.02
    calib = torch.randn(500, generator=gen)
    new_batch = torch.cat([torch.randn(300, generator=gen) * 2.5,
                           torch.tensor([-40.0, 40.0, -7.0, 7.0])])
    # A power-of-two scale makes x / s exact, so every rounding rule shows at the halves.
    halves = torch.tensor([0.125, 0.375, 0.625, -0.125, -0.375, -0.625, 0.875, -1.125, 1.0])
    zeros = torch.zeros(3, 4)
    return [
        ("an 8-bit Gaussian weight matrix (its own scale)", gauss,
         symmetric_qparams(gauss, 8), 8),
        ("a 4-bit Gaussian weight matrix (its own scale)", gauss,
         symmetric_qparams(gauss, 4), 4),
        ("values at exact halves of the step (x / s = +-0.5, +-1.5, +-2.5, 3.5, -4.5) "
         "with s = 0.25, 4 bits", halves, QParams(torch.tensor(0.25), 0, -7, 7), 4),
        ("a new batch with values beyond the range the 8-bit scale was computed on",
         new_batch, symmetric_qparams(calib, 8), 8),
        ("an all-zero tensor (scale = float32 eps)", zeros, symmetric_qparams(zeros, 8), 8),
    ]


def _quantize_hint(got: torch.Tensor, x: torch.Tensor, scale: torch.Tensor, bits: int) -> str:
    qmax = narrow_qmax(bits)
    v = x.float() / scale.float()  # the learner most likely divides in float32
    lo = -(2 ** (bits - 1))
    variants = [
        (torch.clamp(torch.round(v), lo, qmax),
         f"the narrow grid stops at -(2^(b-1) - 1) = {-qmax}: clamp to [{-qmax}, {qmax}]; "
         f"{lo} has no positive twin"),
        (torch.round(v),
         f"clamp the codes to [{-qmax}, {qmax}]: values beyond the scale's range must "
         "saturate at the grid's ends"),
        (torch.clamp(torch.floor(v), -qmax, qmax),
         "round to the nearest integer (torch.round), not down (floor)"),
        (torch.clamp(torch.trunc(v), -qmax, qmax),
         "round to the nearest integer (torch.round); .int() / .long() / trunc cut "
         "toward zero"),
        (torch.clamp(torch.sign(v) * torch.floor(v.abs() + 0.5), -qmax, qmax),
         "torch.round sends halves to the even neighbour (0.5 -> 0, 1.5 -> 2, 2.5 -> 2); "
         "you rounded halves away from zero"),
    ]
    return hint_for(got, [(hint, value) for value, hint in variants],
                    default=f"q = clamp(round(x / s), {-qmax}, {qmax}) with torch.round")


@checker
def check_symmetric_quantize(answer) -> None:
    """``answer(x, scale, bits)`` -> integer codes on the narrow symmetric grid."""
    for label, x, qp, bits in _quantize_cases():
        what = f"codes for {label}"
        got = as_tensor(call(answer, x.clone(), qp.scale.clone(), bits, what=what), what)
        if got.is_floating_point() or got.is_complex() or got.dtype == torch.bool:
            raise CheckFailed(
                f"{what}: expected an integer tensor, got {got.dtype}. Hint: the point is to "
                "store integers: convert with .to(torch.int8) after clamping"
            )
        want = quantize(x, qp)
        hint = "" if got.shape != want.shape else _quantize_hint(got, x, qp.scale, bits)
        expect_equal(got, want, what, hint=hint)
    passed(
        "your codes match qc.quantize at 4 and 8 bits, at exact halves, beyond the "
        "scale's range and on an all-zero tensor"
    )


# --------------------------------------------------------------------------- levels used


def _levels_cases() -> list[tuple[str, torch.Tensor, int]]:
    gen = torch.Generator().manual_seed(5)
    relu = torch.relu(torch.randn(4000, generator=gen))
    gauss = torch.randn(4000, generator=gen) * 0.02
    return [
        ("ReLU activations, 4 bits", relu, 4),
        ("ReLU activations, 8 bits", relu, 8),
        ("Gaussian weights, 4 bits", gauss, 4),
        ("Gaussian weights, 3 bits", gauss, 3),
        ("an all-zero tensor, 8 bits", torch.zeros(10, 10), 8),
    ]


@checker
def check_levels_used(answer) -> None:
    """``answer(x, bits)`` -> fraction of the narrow grid's 2^b - 1 codes that ``x`` uses."""
    for label, x, bits in _levels_cases():
        what = f"fraction of codes used for {label}"
        got = one_number(call(answer, x.clone(), bits, what=what), what)
        qp = symmetric_qparams(x, bits)
        q = quantize(x, qp)
        used = torch.unique(q).numel()
        n_codes = qp.qmax - qp.qmin + 1
        want = torch.tensor(used / n_codes, dtype=torch.float64)
        n_nonneg = torch.unique(q[q >= 0]).numel()
        g = float(got)
        if used != n_nonneg and abs(g - n_nonneg / n_codes) < 1e-9:
            hint = "count every distinct code, the negative ones too"
        elif abs(g - used / 2**bits) < 1e-9:
            hint = (f"the narrow grid has 2^b - 1 = {n_codes} codes, not 2^b = {2**bits}: "
                    "divide by qmax - qmin + 1")
        elif abs(g - used) < 1e-9:
            hint = "return a fraction: divide the number of distinct codes by 2^b - 1"
        elif g > 1.0:
            hint = ("count distinct integer codes after quantizing (torch.unique of "
                    "qc.quantize(x, qp)), not distinct float values")
        else:
            hint = ("quantize with qc.symmetric_qparams(x, bits) and qc.quantize, count the "
                    "distinct codes with torch.unique, divide by 2^b - 1")
        expect_close(got, want, what, rtol=1e-6, atol=1e-9, hint=hint)
    passed("your fractions match on ReLU, Gaussian and all-zero tensors at 3, 4 and 8 bits")
