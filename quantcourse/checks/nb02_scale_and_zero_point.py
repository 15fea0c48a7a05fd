"""Checkers for the exercises of ``02_scale_and_zero_point.ipynb``."""

from __future__ import annotations

import torch

from ..affine import QParams, asymmetric_qparams, dequantize, quantize
from ._core import (
    CheckFailed,
    as_tensor,
    call,
    checker,
    close,
    expect_close,
    expect_equal,
    hint_for,
    passed,
)

# A float32 scale for which x / s and x * (1/s) round differently for some x = (k + 0.5) * s
# (found by search in the notebook; 22 of the 255 values below differ).
_TRICKY_SCALE = 0.009847743436694145


# --------------------------------------------------------------------------- quantize


def _quantize_variants(x, s, z, qmin, qmax):
    """What common wrong versions of quantize give (used to name the mistake)."""
    inv = torch.reciprocal(s)
    v = x * inv

    def clamp(t):
        return torch.clamp(t, qmin, qmax)

    away = torch.sign(v) * torch.floor(v.abs() + 0.5)
    return [
        ("the zero point is added after rounding: round(x * (1/s)) + z, not round(x/s + z) "
         "(adding it first flips which way exact halves go when z is odd)",
         clamp(torch.round(v + z))),
        ("you used floor; use torch.round (round half to even)", clamp(torch.floor(v) + z)),
        ("you truncated towards zero; use torch.round (round half to even)",
         clamp(torch.trunc(v) + z)),
        ("you rounded halves away from zero; torch.round rounds half to even "
         "(2.5 -> 2, 3.5 -> 4)", clamp(away + z)),
        ("you forgot the clamp to [qmin, qmax]: values outside the grid must saturate",
         torch.round(v) + z),
        ("sign error: the zero point is added (q = round(x * (1/s)) + z), not subtracted",
         clamp(torch.round(v) - z)),
        ("your zero point is off by one", clamp(torch.round(v) + z + 1)),
        ("your zero point is off by one", clamp(torch.round(v) + z - 1)),
        ("you divided by the scale: multiply by its float32 reciprocal, x * (1/scale), as "
         "qc.quantize and torch.fake_quantize_per_tensor_affine do (x / s and x * (1/s) "
         "can round differently at exact halves)", clamp(torch.round(x / s) + z)),
        ("you multiplied by the scale; divide by it (multiply by 1/scale)",
         clamp(torch.round(x * s) + z)),
    ]


def _quantize_cases():
    g = torch.Generator().manual_seed(2)
    halves = (torch.arange(-3, 12, dtype=torch.float32) + 0.5) * 0.25
    gauss = torch.randn(1000, generator=g) * 3.0
    small = torch.randn(200, generator=g)
    tricky = (torch.arange(-128, 127, dtype=torch.float32) + 0.5) * _TRICKY_SCALE
    return [
        ("exact halves (x * (1/s) = k + 0.5; scale 0.25, zero point 3, grid [0, 15])",
         halves, 0.25, 3, 0, 15),
        ("Gaussian values, many outside the grid (scale 0.0372, zero point 100, grid [0, 255])",
         gauss, 0.0372, 100, 0, 255),
        ("a signed 4-bit grid [-8, 7] with zero point -2, scale 0.3", small, 0.3, -2, -8, 7),
        (f"values near exact halves with scale {_TRICKY_SCALE:.9g}, zero point 0, "
         "grid [-128, 127]", tricky, _TRICKY_SCALE, 0, -128, 127),
    ]


@checker
def check_quantize(answer) -> None:
    """``answer(x, scale, zero_point, qmin, qmax)`` -> integers ``clamp(round(x/s) + z)``."""
    what = "quantize"
    cases = _quantize_cases()
    for label, x, scale, zp, qmin, qmax in cases:
        s = torch.tensor(scale, dtype=torch.float32)
        qp = QParams(s, torch.tensor(zp), qmin, qmax)
        want = quantize(x, qp).to(torch.int64)
        where = f"{what} on {label}"
        got = as_tensor(call(answer, x.clone(), s.clone(), zp, qmin, qmax, what=where), where)
        if got.shape != want.shape:
            raise CheckFailed(f"{where}: expected shape {tuple(want.shape)}, "
                              f"got {tuple(got.shape)}")
        hint = hint_for(
            got, _quantize_variants(x, s, zp, qmin, qmax), want=want,
            default="q = clamp(torch.round(x * (1/scale)) + zero_point, qmin, qmax): round "
                    "half to even, add the zero point after rounding, then clamp",
        )
        expect_equal(got, want, where, hint=hint)
    passed(f"{what} matches qc.quantize on {len(cases)} cases, exact halves and clipped "
           "values included")


# --------------------------------------------------------------------------- dequantize


def _dequantize_variants(q, s, z):
    qf = q.to(torch.float32)
    wrapped = s * (q - z) if q.dtype == torch.uint8 else None
    variants = [
        ("sign error: subtract the zero point, x_hat = s * (q - z)", s * (qf + z)),
        ("subtract the zero point before multiplying by the scale: s * (q - z), not s*q - z",
         s * qf - z),
        ("multiply by the scale, do not divide: s * (q - z)", (qf - z) / s),
        ("you forgot the zero point: x_hat = s * (q - z)", s * qf),
    ]
    if wrapped is not None:
        variants.insert(0, (
            "q is uint8, and q - z in uint8 arithmetic wraps around below 0 (2 - 5 = 253): "
            "convert q to float32 (q.float()) before subtracting the zero point", wrapped))
    return variants


@checker
def check_dequantize(answer) -> None:
    """``answer(q, scale, zero_point)`` -> float ``scale * (q - zero_point)``."""
    what = "dequantize"
    g = torch.Generator().manual_seed(3)
    cases = [
        ("uint8 codes from an 8-bit unsigned grid (scale 0.02, zero point 128)",
         torch.randint(0, 256, (300,), generator=g).to(torch.uint8), 0.02, 128, 0, 255),
        ("int8 codes from a signed 4-bit grid (scale 0.5, zero point -3)",
         torch.randint(-8, 8, (4, 25), generator=g).to(torch.int8), 0.5, -3, -8, 7),
        ("int8 codes with zero point 0 (scale 0.0123)",
         torch.arange(-127, 128).to(torch.int8), 0.0123, 0, -127, 127),
    ]
    for label, q, scale, zp, qmin, qmax in cases:
        s = torch.tensor(scale, dtype=torch.float32)
        qp = QParams(s, torch.tensor(zp), qmin, qmax)
        want = dequantize(q, qp)
        where = f"{what} on {label}"
        got = as_tensor(call(answer, q.clone(), s.clone(), zp, what=where), where)
        if got.shape == want.shape and not got.is_floating_point():
            raise CheckFailed(f"{where}: expected floating-point values, got {got.dtype}")
        hint = ""
        if got.shape == want.shape and not close(got, want, rtol=1e-5, atol=1e-7):
            hint = hint_for(got, _dequantize_variants(q, s, zp), rtol=1e-5, atol=1e-7,
                            want=want,
                            default="x_hat = scale * (q - zero_point), computed in float32")
        expect_close(got, want, where, rtol=1e-5, atol=1e-7, hint=hint)
    passed(f"{what} matches qc.dequantize on {len(cases)} cases, uint8 and int8 codes included")


# --------------------------------------------------------------------------- qparams


def _qparams_variants(x, bits):
    qmin, qmax = 0, 2**bits - 1
    mn, mx = x.min(), x.max()
    wmn, wmx = torch.clamp(mn, max=0.0), torch.clamp(mx, min=0.0)
    s = (wmx - wmn) / (qmax - qmin)
    s_full = (wmx - wmn) / 2**bits
    s_nowiden = (mx - mn) / (qmax - qmin)
    return [
        ("widen the range to include 0 first: min(x.min(), 0) and max(x.max(), 0)",
         s_nowiden, qmin - torch.round(mn / s_nowiden)),
        ("widen the range to include 0 first: min(x.min(), 0) and max(x.max(), 0)",
         s_nowiden, torch.clamp(qmin - torch.round(mn / s_nowiden), qmin, qmax)),
        ("an unsigned b-bit grid has 2**bits - 1 steps between its 2**bits levels: "
         "s = (max - min) / (2**bits - 1)", s_full, qmin - torch.round(wmn / s_full)),
        ("sign error in the zero point: z = qmin - round(min / s) (min is <= 0, so z >= 0)",
         s, qmin + torch.round(wmn / s)),
        ("round the zero point (torch.round), do not truncate or floor it",
         s, qmin - torch.trunc(wmn / s)),
        ("round the zero point (torch.round), do not truncate or floor it",
         s, qmin - torch.floor(wmn / s)),
        ("round the zero point (torch.round), do not truncate or floor it",
         s, qmin + torch.trunc(-wmn / s)),
        ("the zero point must be an integer: round it, z = qmin - round(min / s)",
         s, qmin - wmn / s),
        ("your zero point is off by one", s, qmin - torch.round(wmn / s) + 1),
        ("your zero point is off by one", s, qmin - torch.round(wmn / s) - 1),
    ]


@checker
def check_affine_qparams(answer) -> None:
    """``answer(x, bits)`` -> ``(scale, zero_point)`` for the unsigned grid ``[0, 2^b - 1]``."""
    what = "affine_qparams"
    g = torch.Generator().manual_seed(4)
    cases = [
        ("a Gaussian tensor, 8 bits", torch.randn(500, generator=g) * 0.7 + 0.3, 8),
        ("a Gaussian tensor, 4 bits", torch.randn(64, 8, generator=g), 4),
        ("an all-positive tensor in [2, 5] (the range must be widened to include 0), 8 bits",
         torch.rand(300, generator=g) * 3 + 2, 8),
        ("an all-negative tensor in [-4, -1], 6 bits", -(torch.rand(300, generator=g) * 3 + 1), 6),
        ("ReLU outputs (half exact zeros), 3 bits",
         torch.relu(torch.randn(400, generator=g)), 3),
    ]
    for label, x, bits in cases:
        qp = asymmetric_qparams(x, bits)
        where = f"{what} on {label}"
        out = call(answer, x.clone(), bits, what=where)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise CheckFailed(f"{where}: return a pair (scale, zero_point), "
                              f"got {type(out).__name__}")
        s_got = as_tensor(out[0], f"{where}, scale")
        z_got = as_tensor(out[1], f"{where}, zero point")
        for name, t in (("scale", s_got), ("zero point", z_got)):
            if t.numel() != 1:
                raise CheckFailed(f"{where}: the {name} should be one number (per tensor), "
                                  f"got shape {tuple(t.shape)}")
        s_got, z_got = s_got.reshape(()), z_got.reshape(())
        hint = ""
        s_ok = bool(torch.isclose(s_got.double(), qp.scale.double(), rtol=1e-5, atol=0.0))
        z_ok = float(z_got) == float(qp.zero_point)
        if not (s_ok and z_ok):
            hint = hint_for(
                (s_got, z_got), [(h, (s_v, z_v)) for h, s_v, z_v in _qparams_variants(x, bits)],
                rtol=1e-5, want=(qp.scale.reshape(()), qp.zero_point.reshape(())),
                default="s = (max - min) / (qmax - qmin) over the range widened to include 0, "
                        "z = qmin - round(min / s)")
        expect_close(s_got, qp.scale.reshape(()), f"{where}, scale", rtol=1e-5, atol=0.0,
                     hint=hint)
        expect_equal(z_got.double(), qp.zero_point.reshape(()).double(),
                     f"{where}, zero point", hint=hint)
    passed(f"{what} matches qc.asymmetric_qparams on {len(cases)} tensors, "
           "all-positive and all-negative ones included")
