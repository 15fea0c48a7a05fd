"""Checkers for the exercises of ``04_asymmetric.ipynb``."""

from __future__ import annotations

import torch

from ..affine import asymmetric_qparams, dequantize, quantize
from ._core import (
    CheckFailed,
    as_tensor,
    call,
    checker,
    expect_close,
    expect_equal,
    fmt,
    hint_for,
    passed,
)

# ---------------------------------------------------------------- scale and zero point

# (x_min, x_max, bits, signed): a range around zero, an all-positive one (the notes' example
# data sit in about [20, 40]), an all-negative one, a constant, and signed grids.
_ZP_CASES = [
    (-1.0, 3.0, 8, False),
    (20.0, 40.0, 8, False),
    (-5.0, -1.0, 4, False),
    (-0.3, 0.1, 4, False),
    (3.0, 3.0, 8, False),
    (-1.0, 3.0, 8, True),
    (-5.0, -1.0, 4, True),
    (2.0, 7.0, 3, True),
    (-2.0, -2.0, 8, True),
]


def _pair_of_numbers(got, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Split an answer into a one-element scale and zero point."""
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise CheckFailed(f"{what}: expected a pair (scale, zero_point), got {type(got).__name__}")
    out = []
    for value, name in zip(got, ("scale", "zero point"), strict=True):
        t = as_tensor(value, f"{what}: {name}")
        if t.numel() != 1:
            raise CheckFailed(f"{what}: {name} should be one number, got shape {tuple(t.shape)}")
        out.append(t.detach().reshape(()).double())
    return out[0], out[1]


def _zp_hint(z: float, want: int, x_min: float, x_max: float, qmin: int, qmax: int,
             s: float) -> str:
    lo = min(x_min, 0.0)
    if z != z:  # NaN
        return "the zero point is NaN: did you divide by a zero scale?"
    if z != round(z):
        return "the zero point must be an integer code: z = qmin - round(min / s)"
    if abs(z - want) == 1:
        return ("off by one: z = qmin - round(min / s), rounding half to even "
                "(torch.round or Python's round), with no extra +1 or -1")
    if z == qmin + round(lo / s) or z == qmin + round(x_min / s):
        return "sign error: z = qmin - round(min / s), not qmin + round(min / s)"
    if z < qmin or z > qmax:
        return (f"the zero point must lie in [qmin, qmax] = [{qmin}, {qmax}]: widen the range "
                "to include 0 (min(x_min, 0), max(x_max, 0)) and clamp")
    if want == qmin and x_min > 0:
        return "widen the range to include 0 first: min(x_min, 0), max(x_max, 0)"
    return "z = clamp(qmin - round(min / s), qmin, qmax), with min = min(x_min, 0)"


@checker
def check_zero_point(answer) -> None:
    """``answer(x_min, x_max, bits, signed)`` returns ``(scale, zero_point)``."""
    for x_min, x_max, bits, signed in _ZP_CASES:
        what = f"asym_qparams(x_min={x_min}, x_max={x_max}, bits={bits}, signed={signed})"
        got = call(answer, x_min, x_max, bits, signed, what=what)
        s, z = _pair_of_numbers(got, what)
        qp = asymmetric_qparams(torch.tensor([x_min, x_max]), bits, signed=signed)
        want_s = qp.scale.double()
        if x_min > 0 or x_max < 0:
            s_hint = "widen the range to include 0 first: min(x_min, 0), max(x_max, 0)"
        elif x_min == x_max:
            s_hint = "a constant still spans [min(x, 0), max(x, 0)]: widen the range to include 0"
        else:
            s_hint = ("s = (max - min) / (qmax - qmin) with [qmin, qmax] = [0, 2^b - 1] unsigned "
                      "or [-2^(b-1), 2^(b-1) - 1] signed")
        expect_close(s, want_s, f"{what}: scale", rtol=1e-5, atol=0.0, hint=s_hint)
        want_z = int(qp.zero_point)
        if float(z) != want_z:
            hint = _zp_hint(float(z), want_z, x_min, x_max, qp.qmin, qp.qmax, float(want_s))
            expect_equal(z, torch.tensor(float(want_z), dtype=torch.float64),
                         f"{what}: zero point", hint=hint)
    passed(f"scale and zero point match qc.asymmetric_qparams on {len(_ZP_CASES)} ranges "
           "(all-positive, all-negative, constant, signed and unsigned)")


# ---------------------------------------------------------------- quantize + dequantize


def _roundtrip_cases() -> list[tuple[str, torch.Tensor, int, str]]:
    g = torch.Generator().manual_seed(4)
    # s = 0.25 and z = 3 (odd) put several values exactly half-way between two codes.
    halves = torch.tensor([-0.75, 3.0, 0.125, 0.375, 0.625, -0.125, 1.0])
    return [
        ("Gaussian values", torch.randn(200, generator=g), 8, ""),
        ("values exactly half-way between codes", halves, 4, ""),
        ("ReLU-like values", torch.relu(torch.randn(64, generator=g)), 4, ""),
        ("an all-positive tensor in [20, 40]", 20 + 20 * torch.rand(50, generator=g), 8,
         "widen the range to include 0: lo = min(x.min(), 0), hi = max(x.max(), 0); "
         "otherwise the zero point is clamped and the top of the range is clipped"),
        ("a constant tensor (all 3.0)", torch.full((6,), 3.0), 8,
         "a constant tensor spans [min(x, 0), max(x, 0)] = [0, 3]: widen the range to include 0"),
        ("an all-zero tensor", torch.zeros(5), 4,
         "an all-zero tensor gives max - min = 0: floor the scale at float32 eps "
         "(torch.finfo(torch.float32).eps) so that nothing divides by zero"),
        ("an all-negative tensor", -1 - torch.rand(30, generator=g), 4,
         "widen the range to include 0: hi = max(x.max(), 0)"),
        ("a 2-D tensor at 3 bits", torch.randn(3, 4, generator=g), 3, ""),
    ]


_GENERIC_Q = ("q = clamp(round(x * (1/s)) + z, 0, 2^b - 1) with round half to even (torch.round), "
              "s = (hi - lo) / (2^b - 1), z = clamp(-round(lo / s), 0, 2^b - 1), "
              "lo = min(x.min(), 0), hi = max(x.max(), 0)")


def _codes_hint(q: torch.Tensor, x: torch.Tensor, qp) -> str:
    """Name the rounding mistake whose codes match ``q``, if one does."""
    v = x.float() * torch.reciprocal(qp.scale)
    z = qp.zero_point.float()
    before = torch.clamp(torch.round(v + z), qp.qmin, qp.qmax)
    away = torch.clamp(torch.sign(v) * torch.floor(v.abs() + 0.5) + z, qp.qmin, qp.qmax)
    return hint_for(q, {
        "add the zero point AFTER rounding: round(x * (1/s)) + z; with round-half-to-even, "
        "round(x/s + z) lands on a different code at exact halves when z is odd": before,
        "round half to even (torch.round), not half away from zero: "
        "0.5 -> 0, 1.5 -> 2, 2.5 -> 2": away,
    })


@checker
def check_asymmetric_roundtrip(answer) -> None:
    """``answer(x, bits)`` returns ``(q, x_hat)`` on the unsigned grid ``[0, 2^b - 1]``."""
    cases = _roundtrip_cases()
    for name, x, bits, hint in cases:
        what = f"asym_roundtrip on {name} (bits={bits})"
        got = call(answer, x.clone(), bits, what=what)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise CheckFailed(f"{what}: expected a pair (q, x_hat), got {type(got).__name__}")
        qp = asymmetric_qparams(x, bits)
        want_q = quantize(x, qp)
        want_x = dequantize(want_q, qp)
        q = as_tensor(got[0], f"{what}: q")
        if q.is_floating_point() and not bool(torch.isfinite(q).all()):
            raise CheckFailed(
                f"{what}: q holds NaN or infinite values (expected codes like {fmt(want_q)})"
                + (f". Hint: {hint}" if hint else ". Hint: did the scale come out as 0?")
            )
        if q.shape == want_q.shape and not torch.equal(q.double(), want_q.double()):
            hint = _codes_hint(q, x, qp) or hint or _GENERIC_Q
        expect_equal(q, want_q, f"{what}: integer codes q", hint=hint)
        expect_close(got[1], want_x, f"{what}: dequantized values x_hat", rtol=1e-5, atol=1e-6,
                     hint="x_hat = s * (q - z)")
    passed(f"codes and reconstructions match qc.quantize / qc.dequantize on {len(cases)} tensors "
           "(exact halves, all-positive, constant and all-zero included)")


# ---------------------------------------------------------------- matmul with zero points


def _matmul_cases() -> list[tuple[torch.Tensor, int, torch.Tensor, int]]:
    g = torch.Generator().manual_seed(7)

    def codes(shape, lo, hi):
        return torch.randint(lo, hi + 1, shape, generator=g, dtype=torch.int64)

    return [
        (codes((3, 5), 0, 255), 7, codes((5, 2), -128, 127), -3),
        (codes((4, 6), 0, 255), 128, codes((6, 3), 0, 255), 121),
        (codes((2, 8), 0, 255), 11, codes((8, 4), -127, 127), 0),    # symmetric weights
        (codes((5, 3), -128, 127), 0, codes((3, 6), 0, 15), 8),      # symmetric activations
        (codes((1, 16), 0, 255), 255, codes((16, 4), -128, 127), -128),
    ]


@checker
def check_zero_point_matmul(answer) -> None:
    """``answer(qa, za, qw, zw)`` returns C with ``(qa - za) @ (qw - zw) == qa @ qw + C``."""
    cases = _matmul_cases()
    for qa, za, qw, zw in cases:
        M, K = qa.shape
        N = qw.shape[1]
        what = f"zp_correction(qa {M}x{K}, za={za}, qw {K}x{N}, zw={zw})"
        got = call(answer, qa.clone(), za, qw.clone(), zw, what=what)
        want = (qa - za) @ (qw - zw) - qa @ qw
        got_t = as_tensor(got, what)
        if got_t.shape != want.shape:
            raise CheckFailed(
                f"{what}: expected shape {tuple(want.shape)}, got {tuple(got_t.shape)}. Hint: "
                "sum qa over k (its columns, dim=1) and qw over k (its rows, dim=0), keeping "
                "dimensions so that they broadcast to M x N"
            )
        diff = got_t.double() - want.double()
        hint = ("C = -zw * (row sums of qa) - za * (column sums of qw) + K * za * zw; check the "
                "signs and which zero point multiplies which sum")
        if bool((diff == 0).all()):
            continue
        if za * zw and bool((diff == -K * za * zw).all()):
            hint = "you left out the constant term K * za * zw"
        elif bool((diff == diff.reshape(-1)[0]).all()):
            hint = ("the constant term is K * za * zw, with K = qa.shape[1] the inner "
                    "dimension that the matmul sums over")
        expect_equal(got_t, want, f"{what}: zero-point correction", hint=hint)
    passed(f"the zero-point correction terms are right on {len(cases)} integer matmuls "
           "(symmetric weights and symmetric activations included)")
