"""Checkers for the exercises of ``13_integer_only_inference.ipynb``."""

from __future__ import annotations

import torch

from ..fixedpoint import multiply_by_quantized_multiplier, quantize_multiplier
from ._core import CheckFailed, as_tensor, call, checker, expect_equal, fmt, hint_for, passed

_I32 = (-(2**31), 2**31 - 1)


def _integer_answer(got, want: torch.Tensor, what: str) -> torch.Tensor:
    """The learner's result as a tensor of integers with ``want``'s shape."""
    t = as_tensor(got, what)
    if t.shape != want.shape:
        raise CheckFailed(f"{what}: expected shape {tuple(want.shape)}, got {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise CheckFailed(f"{what}: expected integer codes, got {t.dtype}: an integer-only "
                          "kernel never leaves the integers (no float division or torch.round)")
    return t


def _round_half_away(num: torch.Tensor, den: int) -> torch.Tensor:
    """``num / den`` (den > 0 and even) rounded half away from zero, exactly, in int64."""
    mag = (num.abs() + den // 2) // den
    return torch.where(num < 0, -mag, mag)


# ---------------------------------------------------------------- single rounding


def _single_rounding_cases() -> list[tuple[torch.Tensor, float]]:
    g = torch.Generator().manual_seed(13)
    accs = torch.cat([
        torch.randint(-(2**20), 2**20, (400,), generator=g),
        torch.arange(-600, 601),                    # small accumulators: where double
        torch.tensor([_I32[0] + 1, _I32[1], 0]),     # rounding bites, and the extremes
    ]).to(torch.int32)
    # real multipliers: requantization-sized ones, exact powers of two (ties), one above 1
    mults = [0.0013183427, 0.25, 0.0017, 0.71866, 2.0**-10, 3.5]
    return [(accs, m) for m in mults]


def _single_rounding_reference(acc: torch.Tensor, m0: int, shift: int) -> torch.Tensor:
    prod = acc.to(torch.int64) * m0
    e = 31 - shift
    out = _round_half_away(prod, 2**e)
    return torch.clamp(out, *_I32)


@checker
def check_single_rounding(answer) -> None:
    """``answer(acc, m0, shift)``: ``acc * m0 * 2^(shift - 31)`` with one rounding, int32."""
    double_differs = 0
    total = 0
    for acc, m in _single_rounding_cases():
        m0, shift = quantize_multiplier(m)
        what = f"requantize_single_rounding(acc, m0={m0}, shift={shift})  [m = {m:.6g}]"
        got = call(answer, acc.clone(), m0, shift, what=what)
        want = _single_rounding_reference(acc, m0, shift)
        got_t = _integer_answer(got, want, what)
        if not torch.equal(got_t.to(torch.int64), want):
            g64 = got_t.to(torch.int64)
            bad = (g64 != want).nonzero()[0].item()
            double = multiply_by_quantized_multiplier(acc, m0, shift).to(torch.int64)
            exact = float(acc[bad]) * m0 * 2.0 ** (shift - 31)
            if torch.equal(g64, double):
                hint = ("this is the reference's double rounding (the high multiply rounds, "
                        "then the shift rounds again); round the full 64-bit product once")
            elif bool((g64 - want).abs().max() <= 1):
                hint = ("off by one at a tie or just beside one: add half of 2^(31 - shift) "
                        "to |acc * m0| before shifting, and round half away from zero for "
                        "negative values too")
            else:
                hint = ("compute acc * m0 in int64 (it needs up to 62 bits), then divide by "
                        "2^(31 - shift) with rounding; shift > 0 divides by less")
            raise CheckFailed(
                f"{what}: {int((g64 != want).sum())} of {want.numel()} value(s) differ; for "
                f"acc = {int(acc[bad])} (exact product {exact:.4f}) expected "
                f"{int(want[bad])}, got {int(g64[bad])}. Hint: {hint}"
            )
        double = multiply_by_quantized_multiplier(acc, m0, shift).to(torch.int64)
        double_differs += int((double != want).sum())
        total += want.numel()
    passed(f"one rounding, exact on {total} accumulators; the double-rounding reference "
           f"(qc.multiply_by_quantized_multiplier) differs from it on {double_differs} of them, "
           "each time by one unit")


# ---------------------------------------------------------------- ReLU6 requantization


def _relu6_cases() -> list[tuple[torch.Tensor, float, float, int]]:
    g = torch.Generator().manual_seed(6)
    acc = torch.cat([torch.randint(-4000, 200000, (300,), generator=g),
                     torch.arange(-8, 9)]).to(torch.int32)
    # (multiplier, output scale, output zero point): 6 / s inside the grid, beyond it,
    # an exact power-of-two multiplier (ties), a zero point that is not the grid's end
    return [
        (acc, 0.0021, 6.0 / 255, -128),
        (acc, 0.0021, 0.035, -128),
        (acc, 0.25, 0.01, -128),
        (acc, 0.0009, 0.03, -20),
    ]


def _relu6_reference(acc, multiplier, scale_out, z_out):
    m0, shift = quantize_multiplier(multiplier)
    y = multiply_by_quantized_multiplier(acc, m0, shift).to(torch.int64) + z_out
    top = min(127, z_out + round(6.0 / scale_out))
    return torch.clamp(y, z_out, top)


@checker
def check_requantize_relu6(answer) -> None:
    """``answer(acc, multiplier, scale_out, z_out)``: int8 codes with ReLU6 fused as a clamp."""
    cases = _relu6_cases()
    for acc, mult, s_out, z_out in cases:
        what = (f"requantize_relu6(acc, multiplier={mult}, scale_out={s_out:.4g}, "
                f"z_out={z_out})")
        got = call(answer, acc.clone(), mult, s_out, z_out, what=what)
        want = _relu6_reference(acc, mult, s_out, z_out)
        got_t = _integer_answer(got, want, what)
        g64 = got_t.to(torch.int64)
        if torch.equal(g64, want):
            continue
        top = min(127, z_out + round(6.0 / s_out))
        hint = ("requantize with qc.quantize_multiplier and qc.multiply_by_quantized_multiplier,"
                " add z_out, then clamp to [z_out, min(127, z_out + round(6 / scale_out))]")
        if int(g64.min()) < z_out:
            hint = (f"codes below the zero point ({int(g64.min())} < {z_out}) are negative "
                    "real values: ReLU6 clamps at the zero point, the code of real 0")
        elif int(g64.max()) > top:
            hint = (f"a code above {top}: the real value 6 sits at z_out + round(6 / scale_out)"
                    " = " + str(top) + ", clamp there (and at 127)")
        elif int(g64.max()) == z_out + 6:
            hint = ("the upper clamp is the code of real 6: z_out + round(6 / scale_out), "
                    "not z_out + 6")
        elif bool((g64 - want).abs().max() <= 1):
            hint = ("off by one at ties: use qc.multiply_by_quantized_multiplier (integer "
                    "rounding), not torch.round on floats, which rounds half to even")
        expect_equal(g64, want, what, hint=hint)
    passed(f"ReLU6 fused into the requantization clamp on {len(cases)} layers "
           "(6 inside and beyond the grid, ties, a zero point that is not -128)")


# ---------------------------------------------------------------- integer average pooling


def _avg_pool_cases() -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    ties = torch.tensor([[[[1, 0, 1, 1, -1, -1, 3, 3],
                           [0, 1, 0, 0, -1, -2, 3, 2]]]], dtype=torch.int8)  # sums 2, 2, -5, 11
    return [
        ("random int8 codes", torch.randint(-128, 128, (2, 3, 4, 6), generator=g,
                                            dtype=torch.int8)),
        ("windows whose mean is a tie or near one", ties),
        ("saturated codes (all 127, all -128)",
         torch.tensor([[[[127, 127], [127, 127]], [[-128, -128], [-128, -128]]]],
                      dtype=torch.int8)),
        ("ReLU-like codes (zero point -128)",
         torch.clamp(torch.randint(-160, 128, (1, 4, 8, 8), generator=g), -128, 127).to(
             torch.int8)),
    ]


def _avg_pool_reference(q: torch.Tensor) -> torch.Tensor:
    n, c, h, w = q.shape
    s = q.to(torch.int64).reshape(n, c, h // 2, 2, w // 2, 2).sum(dim=(3, 5))
    return _round_half_away(s, 4)


@checker
def check_int_avg_pool(answer) -> None:
    """``answer(q, z)``: 2x2 average pooling of int8 codes (zero point ``z``) in integers."""
    cases = _avg_pool_cases()
    for name, q in cases:
        z = -128 if "ReLU" in name else 3
        what = f"int_avg_pool2x2 on {name} (shape {tuple(q.shape)}, z={z})"
        got = call(answer, q.clone(), z, what=what)
        want = _avg_pool_reference(q)
        got_t = _integer_answer(got, want, what)
        g64 = got_t.to(torch.int64)
        if torch.equal(g64, want):
            continue
        s = q.to(torch.int64).reshape(*want.shape[:2], want.shape[2], 2, want.shape[3], 2)
        s = s.sum(dim=(3, 5))
        floor = torch.div(s, 4, rounding_mode="floor")
        trunc = torch.div(s, 4, rounding_mode="trunc")
        even = torch.round(s.double() / 4).to(torch.int64)
        hint = hint_for(g64, {
            "// floors (-1.25 -> -2): round half away from zero instead, "
            "e.g. sign(s) * ((|s| + 2) // 4)": floor,
            "truncating toward zero (C's integer division) drops the rounding: "
            "round half away from zero, sign(s) * ((|s| + 2) // 4)": trunc,
            "torch.round rounds half to even (0.5 -> 0); integer kernels round half "
            "away from zero (0.5 -> 1, -1.25 -> -1)": even,
        })
        if not hint and bool((g64 - want).abs().max() >= 64):
            hint = ("values wrapped around: adding int8 codes in int8 overflows (127 + 127); "
                    "convert to a wider integer type before summing")
        zp_hint = ("the zero point: the mean of (q - z) is mean(q) - z, so averaging the codes"
                   " directly is already right; add back whatever zero point you removed")
        hint = hint or hint_for(
            g64, [(zp_hint, want - z), (zp_hint, want + z)],
            default="sum the four codes in a wide integer type, then divide by 4 rounding half "
                    "away from zero; the zero point needs no correction (the mean of q - z is "
                    "mean(q) - z)")
        bad = (g64 != want).nonzero()[0].tolist()
        raise CheckFailed(
            f"{what}: {int((g64 != want).sum())} of {want.numel()} code(s) differ; at "
            f"{tuple(bad)} the window sums to {int(s[tuple(bad)])}, expected "
            f"{int(want[tuple(bad)])}, got {fmt(g64[tuple(bad)])}. Hint: {hint}"
        )
    passed(f"integer 2x2 average pooling matches TFLite's rounding on {len(cases)} tensors "
           "(ties, saturated codes, a nonzero zero point)")
