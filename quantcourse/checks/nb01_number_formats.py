"""Checkers for the exercises of ``01_number_formats.ipynb``."""

from __future__ import annotations

import math

import torch

from ..models import digits_cnn
from ._core import (
    CheckFailed,
    as_codes,
    call,
    checker,
    fmt_pair,
    hint_for,
    one_number,
    passed,
)

# --------------------------------------------------------------------------- float thresholds


def _thresholds(e: int, m: int, *, bias_shift: int = 0, over: str = "midpoint",
                under: str = "half_subnormal") -> tuple[float, float]:
    """Reference (overflow, underflow) thresholds of an IEEE-style layout; keywords: mistakes."""
    bias = 2 ** (e - 1) - 1 + bias_shift
    overflow = {
        "midpoint": (2 - 2.0 ** -(m + 1)) * 2.0**bias,
        "max": (2 - 2.0**-m) * 2.0**bias,
        "next_power": 2.0 ** (bias + 1),
    }[over]
    underflow = {
        "half_subnormal": 2.0 ** (-bias - m),
        "subnormal": 2.0 ** (1 - bias - m),
        "half_normal": 2.0 ** (-bias),
        "normal": 2.0 ** (1 - bias),
    }[under]
    return overflow, underflow


# (label, exponent bits, mantissa bits, torch dtype to measure with, or None)
_LAYOUTS = [
    ("FP32", 8, 23, torch.float32),
    ("FP16", 5, 10, torch.float16),
    ("BF16", 8, 7, torch.bfloat16),
    ("FP8 E5M2", 5, 2, torch.float8_e5m2),
    ("a 12-bit E6M5 layout", 6, 5, None),
    ("a 6-bit E3M2 layout", 3, 2, None),
]


def _measure(dtype: torch.dtype, overflow: float, underflow: float) -> bool:
    """Whether casting shows the thresholds: ``overflow`` becomes inf and the number just below
    it stays finite; ``underflow`` becomes 0 and the number just above it does not."""
    src = torch.float64 if dtype == torch.float32 else torch.float32
    o = torch.tensor(overflow, dtype=src)
    u = torch.tensor(underflow, dtype=src)
    below = torch.nextafter(o, torch.zeros_like(o))
    above = torch.nextafter(u, torch.full_like(u, math.inf))
    return bool(torch.isinf(o.to(dtype)) and torch.isfinite(below.to(dtype))
                and u.to(dtype) == 0 and above.to(dtype) != 0)


@checker
def check_float_thresholds(answer, model=None) -> None:
    """``answer(exponent_bits, mantissa_bits)`` -> (overflow, underflow) thresholds; with
    ``model``, predict and measure what FP16 and BF16 do to its weights."""
    for label, e, m, dtype in _LAYOUTS:
        what = f"float_thresholds({e}, {m}) for {label}"
        got = call(answer, e, m, what=what)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise CheckFailed(f"{what}: expected a pair (overflow, underflow), got {got!r}")
        g = tuple(float(one_number(v, what)) for v in got)
        want = _thresholds(e, m)
        for name, a, b in (("overflow", g[0], want[0]), ("underflow", g[1], want[1])):
            if a != b:
                hint = hint_for(g, [
                    ("the largest finite number still rounds down; the threshold is the midpoint "
                     "between it and the next power of two, where ties go to the even "
                     "mantissa: infinity", _thresholds(e, m, over="max")),
                    ("values between the largest number and the next power of two round DOWN "
                     "until the midpoint", _thresholds(e, m, over="next_power")),
                    ("subnormals reach below the smallest normal; a value rounds to 0 only up "
                     "to HALF the smallest subnormal (the tie goes to the even code, 0)",
                     _thresholds(e, m, under="subnormal")),
                    ("subnormals reach below the smallest normal; a value rounds to 0 only up "
                     "to HALF the smallest subnormal (the tie goes to the even code, 0)",
                     _thresholds(e, m, under="half_normal")),
                    ("subnormals reach below the smallest normal; a value rounds to 0 only up "
                     "to HALF the smallest subnormal (the tie goes to the even code, 0)",
                     _thresholds(e, m, under="normal")),
                    ("the bias is 2^(e-1) - 1, not 2^(e-1)", _thresholds(e, m, bias_shift=1)),
                ], want=want, default="overflow at (2 - 2^-(m+1)) 2^bias, underflow at half "
                   "the smallest subnormal")
                ga, wb = fmt_pair(a, b)
                raise CheckFailed(f"{what}: {name} threshold expected {wb}, got {ga}. Hint: {hint}")
        if dtype is not None and not _measure(dtype, *want):
            raise CheckFailed(f"{what}: casting to {dtype} does not show these thresholds on "
                              "this machine (does it flush subnormals to zero?)")
    text = f"your thresholds match on {len(_LAYOUTS)} layouts, and casts confirm them for FP32, " \
           "FP16, BF16 and FP8 E5M2"
    if model is not None:
        w = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).float()
        nz = w != 0
        o16, u16 = call(answer, 5, 10, what="float_thresholds(5, 10)")
        ob, ub = call(answer, 8, 7, what="float_thresholds(8, 7)")
        pred = [int((nz & (w.abs() <= u16)).sum()), int((w.abs() >= o16).sum()),
                int((nz & (w.abs() <= ub)).sum()), int((w.abs() >= ob).sum())]
        meas = [int((nz & (w.half() == 0)).sum()), int(w.half().isinf().sum()),
                int((nz & (w.bfloat16() == 0)).sum()), int(w.bfloat16().isinf().sum())]
        if pred != meas:
            raise CheckFailed(f"float_thresholds on the model's weights: predicted (FP16 to "
                              f"zero, FP16 to inf, BF16 to zero, BF16 to inf) = {pred}, "
                              f"measured {meas}")
        text += (f". On the model's {w.numel():,} weights you predict, and casting measures: "
                 f"FP16 flushes {pred[0]} to zero, BF16 {pred[2]}; FP16 overflows on "
                 f"{pred[1]}, BF16 on {pred[3]}")
    passed(text)


# --------------------------------------------------------------------------- choose a Q format


def _q_error(x: torch.Tensor, m: int, n: int) -> float:
    """Largest |x - x_hat| of signed Qm.n (round half to even, saturate), in float64."""
    xd = x.double()
    q = torch.clamp(torch.round(xd * 2.0**n), -(2.0 ** (m + n)), 2.0 ** (m + n) - 1)
    return float((q * 2.0**-n - xd).abs().max())


def _best_q(x: torch.Tensor, max_error: float, *, step_rule: bool = False) -> tuple[int, int]:
    """Brute force: the fewest bits 1 + m + n meeting ``max_error``, then the most n."""
    for total in range(1, 33):
        for n in range(total - 1, -1, -1):
            m = total - 1 - n
            if step_rule and 2.0**-n > max_error:
                continue
            if _q_error(x, m, n) <= max_error:
                return m, n
    raise AssertionError("no format up to 32 bits")


def _analytic_q(x, max_error, *, half_step=True, top=True) -> tuple[int, int]:
    """The usual closed forms, for hints: n from the step, m from max|x|."""
    n = max(0, math.ceil(-math.log2((2 if half_step else 1) * max_error)))
    amax = float(x.abs().max())
    m = max(0, math.ceil(math.log2(amax))) if amax > 0 else 0
    if top and float(x.max()) > 2.0**m - 2.0**-n:
        m += 1
    return m, n


def _q_cases() -> list[tuple[str, torch.Tensor, float]]:
    g = torch.Generator().manual_seed(11)
    return [
        ("Gaussian data (std 3), max error 0.01", torch.randn(500, generator=g) * 3, 0.01),
        ("[-8, 0.3], max error 0.05 (-8 is on the grid)", torch.tensor([-8.0, 0.3]), 0.05),
        ("[8, 0.3], max error 0.05 (+8 is not)", torch.tensor([8.0, 0.3]), 0.05),
        ("[7.97, -1.2], max error 0.04", torch.tensor([7.97, -1.2]), 0.04),
        ("uniform on [0, 0.9], max error 0.001", torch.rand(300, generator=g) * 0.9, 0.001),
        ("[0.75, -0.5], max error 0.25", torch.tensor([0.75, -0.5]), 0.25),
        ("the digits CNN's conv1 weight, max error 0.002",
         digits_cnn().conv1.weight.detach().reshape(-1).clone(), 0.002),
    ]


@checker
def check_q_format(answer) -> None:
    """``answer(x, max_error)`` -> (m, n): the smallest signed Qm.n that meets ``max_error``."""
    for label, x, max_error in _q_cases():
        what = f"choose_q_format on {label}"
        got = call(answer, x.clone(), max_error, what=what)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise CheckFailed(f"{what}: expected a pair (m, n), got {got!r}")
        mn = tuple(int(v) for v in as_codes(torch.tensor([float(v) for v in got]), what))
        want = _best_q(x, max_error)
        if mn == want:
            continue
        if min(mn) < 0:
            raise CheckFailed(f"{what}: m and n must be >= 0, got {mn}")
        err = _q_error(x, *mn)
        if err > max_error:
            a, b = fmt_pair(err, max_error)
            msg = (f"Q{mn[0]}.{mn[1]} makes an error of {a} > {b}. Hint: "
                   + ("values above the top 2^m - 2^-n saturate: check the largest value too"
                      if float(x.max()) > 2.0 ** mn[0] - 2.0 ** -mn[1] else
                      "rounding moves a value by up to half a step, 2^-(n+1)"))
        elif 1 + sum(mn) > 1 + sum(want):
            hint = hint_for(mn, {
                "rounding errs by at most HALF a step: 2^-(n+1) <= max_error is enough":
                    _best_q(x, max_error, step_rule=True),
                "a value just above the top 2^m - 2^-n saturates by less than max_error: "
                "it may still fit": _analytic_q(x, max_error),
            }, want=want, default="try every split of every width, narrowest first")
            msg = (f"Q{mn[0]}.{mn[1]} works but takes {1 + sum(mn)} bits; "
                   f"Q{want[0]}.{want[1]} takes {1 + sum(want)}. Hint: {hint}")
        else:
            msg = (f"expected Q{want[0]}.{want[1]}, got Q{mn[0]}.{mn[1]}: at the same width, "
                   "keep the most fraction bits (the finest step)")
            if float(x.max()) > 2.0 ** want[0] - 2.0 ** -want[1]:
                msg += (f"; in Q{want[0]}.{want[1]} the largest value saturates, by less than "
                        "max_error")
        raise CheckFailed(f"{what}: {msg}")
    x, e = _q_cases()[-1][1:]
    m, n = _best_q(x, e)
    passed(f"your formats match a brute-force search on {len(_q_cases())} cases; the digits "
           f"CNN's conv1 weight fits in Q{m}.{n} ({1 + m + n} bits) with error "
           f"{_q_error(x, m, n):.3g} <= {e}")


# --------------------------------------------------------------------------- change a Q format


def _requant(q: torch.Tensor, n_in: int, m_out: int, n_out: int, *, rounding: str = "even",
             saturate: bool = True) -> torch.Tensor:
    """Reference Q?.n_in -> Qm_out.n_out (float64, exact here); keywords: the mistakes."""
    y = q.double() * 2.0 ** (n_out - n_in)
    r = {
        "even": torch.round(y),
        "floor": torch.floor(y),
        "up": torch.floor(y + 0.5),
        "away": torch.sign(y) * torch.floor(y.abs() + 0.5),
        "trunc": torch.trunc(y),
    }[rounding]
    if saturate:
        r = torch.clamp(r, -(2.0 ** (m_out + n_out)), 2.0 ** (m_out + n_out) - 1)
    return r.to(torch.int64)


def _requant_cases() -> list[tuple[str, torch.Tensor, int, int, int]]:
    g = torch.Generator().manual_seed(5)
    ties = torch.tensor([8, 24, 40, -8, -24, -40, 864, -25, 23, 0, 2047, -2048], dtype=torch.int32)
    # codes up to |40| (2.5): their products stay inside Q3.4, so only rounding matters
    a = torch.randint(-40, 41, (200,), generator=g, dtype=torch.int32)
    b = torch.randint(-40, 41, (200,), generator=g, dtype=torch.int32)
    return [
        ("Q3.8 to Q3.4 (ties, negatives, saturation)", ties, 8, 3, 4),
        ("products of Q3.4 codes (8 fraction bits) to Q3.4", a * b, 8, 3, 4),
        ("Q1.6 to Q2.12 (more fraction bits: a left shift)",
         torch.tensor([64, -64, 127, -128, 5, 0], dtype=torch.int32), 6, 2, 12),
        ("Q7.8 to Q3.8 (the same step: saturation only)",
         torch.tensor([5000, -5000, 2047, -2048, 100], dtype=torch.int32), 8, 3, 8),
        ("Q0.15 to Q0.7", torch.tensor([-32768, 32767, 128, 384, -128, -384, 1], dtype=torch.int32),
         15, 0, 7),
    ]


@checker
def check_change_q_format(answer) -> None:
    """``answer(q, n_in, m_out, n_out)`` -> Qm_out.n_out codes (ties to even, saturated)."""
    for label, q, n_in, m_out, n_out in _requant_cases():
        what = f"change_q_format on {label}"
        got = as_codes(call(answer, q.clone(), n_in, m_out, n_out, what=what), what)
        want = _requant(q, n_in, m_out, n_out)
        if got.shape != want.shape:
            raise CheckFailed(f"{what}: expected shape {tuple(want.shape)}, got {tuple(got.shape)}")
        if torch.equal(got, want):
            continue
        args = (q, n_in, m_out, n_out)
        hint = hint_for(got, [
            ("an arithmetic right shift rounds DOWN (floor); add rounding",
             _requant(*args, rounding="floor")),
            ("adding half a step and then shifting sends every tie up; ties go to the even "
             "code", _requant(*args, rounding="up")),
            ("ties go to the even code, not away from zero", _requant(*args, rounding="away")),
            ("integer division truncates toward zero; round to nearest, ties to even",
             _requant(*args, rounding="trunc")),
            ("saturate to [-2^(m_out+n_out), 2^(m_out+n_out) - 1]",
             _requant(*args, saturate=False)),
        ], want=want, default="q_out = clamp(round_half_even(q * 2^(n_out - n_in)), "
           "-2^(m_out+n_out), 2^(m_out+n_out) - 1)")
        i = int((got != want).nonzero()[0][0])
        raise CheckFailed(f"{what}: code {int(q[i])} should become {int(want[i])}, got "
                          f"{int(got[i])}. Hint: {hint}")
    _, q, n_in, m_out, n_out = _requant_cases()[1]
    exact = q.double() * 2.0 ** (n_out - n_in)
    floor_bias = float((_requant(q, n_in, m_out, n_out, rounding="floor") - exact).mean())
    even_bias = float((_requant(q, n_in, m_out, n_out) - exact).mean())
    passed(f"your conversion matches on {len(_requant_cases())} cases; on 200 products of "
           f"Q3.4 codes its mean error is {even_bias:+.3f} steps, a plain >> gives "
           f"{floor_bias:+.3f}")
