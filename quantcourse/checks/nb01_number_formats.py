"""Checkers for the exercises of ``01_number_formats.ipynb``."""

from __future__ import annotations

import numbers

import torch

from ..formats import compose_float, decompose_float, float_layout, to_fixed
from ._core import CheckFailed, as_tensor, call, checker, fmt, hint_for, passed

# --------------------------------------------------------------------------- float fields


def _float_cases() -> list[tuple[str, torch.dtype, int, int, int]]:
    """(label, dtype, sign, exponent, mantissa): normal numbers only, edges included."""
    cases = []
    values = {
        torch.float32: [0.1, -2.5, 3.0e38, 1.5e-38],
        torch.float16: [65504.0, -0.1, 6.103515625e-05, 1.0],
        torch.bfloat16: [-3.14159, 1.0e30, 2.0e-38],
    }
    for dtype, vals in values.items():
        d = decompose_float(torch.tensor(vals, dtype=torch.float64), dtype)
        name = float_layout(dtype).name
        for v, s, e, m in zip(vals, d["sign"], d["exponent"], d["mantissa"], strict=True):
            cases.append((f"{name} fields of {v:g}", dtype, int(s), int(e), int(m)))
    # largest mantissa with the smallest normal exponent, negative
    cases.append(("FP16 fields (1, 1, 1023)", torch.float16, 1, 1, 1023))
    cases.append(("BF16 fields (0, 254, 127) (BF16's largest value)", torch.bfloat16, 0, 254, 127))
    return cases


def _float_variants(s: int, e: int, m: int, eb: int, mb: int) -> list[tuple[str, float]]:
    """What common wrong formulas give for these fields (used to name the mistake)."""
    bias = 2 ** (eb - 1) - 1
    sign = -1.0 if s else 1.0
    frac = m / 2**mb
    right = 2.0 ** (e - bias) * (1 + frac)
    sign_hint = "mind the sign: sign bit 1 means a negative value, (-1)^sign"
    return [
        ("you did not subtract the exponent bias 2^(exponent_bits - 1) - 1",
         sign * 2.0**e * (1 + frac)),
        ("you forgot the implicit leading 1: a normal number's significand is "
         "1 + mantissa / 2^mantissa_bits", sign * 2.0 ** (e - bias) * frac),
        (sign_hint, right),
        (sign_hint, -sign * right),
        ("the bias is 2^(exponent_bits - 1) - 1, not 2^(exponent_bits - 1)",
         sign * 2.0 ** (e - bias - 1) * (1 + frac)),
        ("the mantissa field is a fraction: divide it by 2^mantissa_bits",
         sign * 2.0 ** (e - bias) * (1 + m)),
    ]


@checker
def check_float_value(answer) -> None:
    """``answer(sign, exponent, mantissa, exponent_bits, mantissa_bits)`` -> value (normals)."""
    what = "float_value"
    labels, got, want, fields = [], [], [], []
    for label, dtype, s, e, m in _float_cases():
        layout = float_layout(dtype)
        eb, mb = layout.exponent_bits, layout.mantissa_bits
        out = call(answer, s, e, m, eb, mb, what=f"{what} on {label}")
        if isinstance(out, numbers.Real) and not isinstance(out, bool):
            out = torch.tensor(float(out), dtype=torch.float64)  # keep a float64's precision
        out = as_tensor(out, f"{what} on {label}")
        if out.numel() != 1:
            raise CheckFailed(
                f"{what} on {label}: expected one number, got shape {tuple(out.shape)}"
            )
        labels.append(label)
        got.append(float(out.double().reshape(())))
        want.append(float(compose_float(s, e, m, dtype)))
        fields.append((s, e, m, eb, mb))
    got_t, want_t = torch.tensor(got, dtype=torch.float64), torch.tensor(want, dtype=torch.float64)
    ok = torch.isclose(got_t, want_t, rtol=1e-9, atol=0.0)
    if bool(ok.all()):
        passed(f"{what} rebuilds {len(got)} normal FP32, FP16 and BF16 numbers from their fields")
        return
    per_case = [_float_variants(*f) for f in fields]
    mistakes = [(name, torch.tensor([v[k][1] for v in per_case], dtype=torch.float64))
                for k, (name, _) in enumerate(per_case[0])]
    hint = hint_for(got_t, mistakes, rtol=1e-9, default=(
        "value = (-1)^sign * 2^(exponent - bias) * (1 + mantissa / 2^mantissa_bits), "
        "bias = 2^(exponent_bits - 1) - 1"))
    i = int((~ok).nonzero()[0])
    raise CheckFailed(
        f"{what}: {int((~ok).sum())} of {len(got)} value(s) differ; for the {labels[i]} "
        f"(sign={fields[i][0]}, exponent={fields[i][1]}, mantissa={fields[i][2]}) "
        f"expected {want[i]:.8g}, got {got[i]:.8g}. Hint: {hint}"
    )


# --------------------------------------------------------------------------- fixed point


def _fixed_cases() -> list[tuple[str, torch.Tensor, int, int]]:
    gen = torch.Generator().manual_seed(1)
    return [
        (  # exact halves (ties), negatives, saturation at both ends
            "Q3.4",
            torch.tensor([0.0, 0.03125, 0.09375, 0.15625, -0.03125, -0.09375, 1.3, -2.71,
                          7.96875, 8.5, -8.0, -8.04, 100.0, -100.0]),
            3, 4,
        ),
        (
            "Q0.7",
            torch.tensor([0.5, -1.0, 0.99, 1.5, -1.5, 0.00390625, 0.01171875, -0.01171875]),
            0, 7,
        ),
        (
            "Q7.8",
            torch.tensor([123.456, -128.5, 200.0, 0.001953125, -0.005859375, 127.998046875]),
            7, 8,
        ),
        ("Q2.5 on Gaussian data", torch.randn(64, generator=gen) * 3, 2, 5),
    ]


def _fixed_variants(x: torch.Tensor, m: int, n: int) -> dict[str, torch.Tensor]:
    lo, hi = -(2 ** (m + n)), 2 ** (m + n) - 1
    y = x.double() * 2.0**n
    return {
        "you truncate toward zero; round to the nearest integer instead": y.trunc().clamp(lo, hi),
        "you round down (floor); round to the nearest integer instead": y.floor().clamp(lo, hi),
        "exact halves must round to even (torch.round), not away from zero": (
            y.sign() * (y.abs() + 0.5).floor()
        ).clamp(lo, hi),
        "values outside the range must saturate (clamp to [-2^(m+n), 2^(m+n) - 1])": y.round(),
        "the smallest value is -2^(m+n), not -(2^(m+n) - 1)": y.round().clamp(lo + 1, hi),
        "multiply by 2^frac_bits (divide by the resolution 2^-n), not by 2^-n": (
            (x.double() * 2.0**-n).round().clamp(lo, hi)
        ),
        "a signed Qm.n number has m + n + 1 bits: the range is [-2^(m+n), 2^(m+n) - 1]": (
            y.round().clamp(-(2 ** (m + n + 1)), 2 ** (m + n + 1) - 1)
        ),
    }


@checker
def check_to_fixed(answer) -> None:
    """``answer(x, int_bits, frac_bits)`` -> the signed Qm.n integers of ``x``."""
    what = "to_fixed"
    results = []
    for label, x, m, n in _fixed_cases():
        out = call(answer, x.clone(), m, n, what=f"{what} on {label}")
        out = as_tensor(out, f"{what} on {label}")
        if out.shape != x.shape:
            raise CheckFailed(
                f"{what} on {label}: expected shape {tuple(x.shape)}, got {tuple(out.shape)}"
            )
        if out.is_floating_point() and not bool(torch.equal(out, out.round())):
            raise CheckFailed(
                f"{what} on {label}: expected integers (the stored Qm.n codes), got "
                f"fractions such as {fmt(out[out != out.round()][:3])}"
            )
        results.append((label, x, m, n, out.double()))
    bad = [r for r in results if not torch.equal(r[4], to_fixed(r[1], r[2], r[3]).double())]
    if not bad:
        passed(f"{what} matches qc.to_fixed on {len(results)} Qm.n cases "
               "(ties, negatives, saturation)")
        return
    per_case = [_fixed_variants(r[1], r[2], r[3]) for r in results]
    hint = hint_for([r[4] for r in results],
                    {name: [v[name] for v in per_case] for name in per_case[0]},
                    default="q = clamp(round_half_even(x * 2^n), -2^(m+n), 2^(m+n) - 1)")
    label, x, m, n, got = bad[0]
    want = to_fixed(x, m, n).double()
    diff = (got != want).nonzero()[0]
    i = int(diff[0])
    raise CheckFailed(
        f"{what}: wrong codes in {len(bad)} of {len(results)} cases; in {label}, "
        f"x = {float(x[i]):.8g} should give {int(want[i])}, got {float(got[i]):.6g}. Hint: {hint}"
    )

