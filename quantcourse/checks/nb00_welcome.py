"""Checkers for the exercises of ``00_welcome.ipynb``."""

from __future__ import annotations

import math

import torch

from ..affine import QParams, dequantize, qrange, quantize, symmetric_qparams
from ..metrics import max_abs_error, quantized_nbytes
from ._core import CheckFailed, as_tensor, call, checker, expect_close, fmt, hint_for, passed

# (numel, bits, n_scales): a transformer-sized layer per tensor and per row, odd sizes whose
# packed bits do not fill the last byte, and a tiny tensor where the scale bytes dominate.
_RATIO_CASES = [
    (4096 * 4096, 8, 1),
    (4096 * 4096, 4, 4096),
    (1000, 2, 10),
    (7, 3, 1),
    (10, 4, 1),
    (1, 8, 1),
]


def _reference_ratio(numel: int, bits: int, n_scales: int) -> float:
    """FP32 bytes over ``qc.quantized_nbytes`` for a symmetric grid of ``bits`` bits."""
    qmin, qmax = qrange(bits, signed=False)  # an unsigned grid holds exactly `bits` bits
    axis = 0 if n_scales > 1 else None
    shape = (n_scales,) if n_scales > 1 else ()
    qp = QParams(torch.ones(shape), torch.zeros(shape, dtype=torch.int32), qmin, qmax, axis)
    return 4 * numel / quantized_nbytes(numel, qp, bits=bits)


def _ratio_hint(got: float, numel: int, bits: int, n_scales: int) -> str:
    """Name the usual mistake whose result matches ``got``."""
    fp32 = 4 * numel
    payload_bits = numel * bits
    mistakes = {
        "you left out the scales: each of the n_scales scales costs 4 bytes (a float32)":
            fp32 / math.ceil(payload_bits / 8),
        "round the packed payload up to whole bytes: math.ceil(numel * bits / 8)":
            fp32 / (payload_bits / 8 + 4 * n_scales),
        "round the packed payload UP to whole bytes (math.ceil), not down":
            fp32 / (payload_bits // 8 + 4 * n_scales),
        "the payload is numel * bits BITS: divide by 8 to get bytes":
            fp32 / (payload_bits + 4 * n_scales),
        "you counted the quantized size in bits: divide by 8 to get bytes":
            fp32 / (payload_bits + 32 * n_scales),
        "FP32 takes 4 bytes (32 bits) per value: you counted the FP32 size in bits":
            32 * numel / (math.ceil(payload_bits / 8) + 4 * n_scales),
        "every scale costs 4 bytes: multiply by n_scales":
            fp32 / (math.ceil(payload_bits / 8) + 4),
        "a float32 scale is 4 bytes, not 1": fp32 / (math.ceil(payload_bits / 8) + n_scales),
        "the ratio is FP32 bytes / quantized bytes, not the other way round":
            (math.ceil(payload_bits / 8) + 4 * n_scales) / fp32,
    }
    return hint_for(got, mistakes, rtol=1e-9, default="quantized bytes = math.ceil(numel * "
                    "bits / 8) + 4 * n_scales; FP32 bytes = 4 * numel")


def _as_number(value, what: str) -> float:
    """A Python number, a NumPy scalar or a one-element tensor, as a float (no float32 detour)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_complex():
            raise CheckFailed(f"{what}: expected one real number, got a tensor of shape "
                              f"{tuple(value.shape)}")
        return float(value.item())
    if isinstance(value, bool) or not hasattr(value, "__float__") or isinstance(value, complex):
        raise CheckFailed(f"{what}: expected a number, got {type(value).__name__}")
    return float(value)


@checker
def check_compression_ratio(answer) -> None:
    """``answer(numel, bits, n_scales)`` returns FP32 bytes / quantized bytes (scales included)."""
    for numel, bits, n_scales in _RATIO_CASES:
        what = f"compression_ratio(numel={numel}, bits={bits}, n_scales={n_scales})"
        got = call(answer, numel, bits, n_scales, what=what)
        g = _as_number(got, what)
        want = _reference_ratio(numel, bits, n_scales)
        if not math.isclose(g, want, rel_tol=1e-9):
            raise CheckFailed(
                f"{what}: expected {want:.10g}, got {g:.10g}. "
                f"Hint: {_ratio_hint(g, numel, bits, n_scales)}"
            )
    passed(
        f"compression ratios match qc.quantized_nbytes on {len(_RATIO_CASES)} cases "
        f"(e.g. 4096x4096 at INT8 per tensor: {_reference_ratio(4096 * 4096, 8, 1):.7g}x)"
    )


def _roundtrip_cases() -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1234)
    weights = torch.randn(64, 32, generator=g) * 0.02
    outlier = torch.randn(200, generator=g)
    outlier[17] = -9.0  # the most negative value sets the scale
    return [
        ("a 64x32 weight matrix (std 0.02)", weights),
        ("a vector with an outlier at -9", outlier),
        ("an all-zero tensor", torch.zeros(5, 3)),
        ("a single value", torch.tensor([0.7])),
    ]


def _roundtrip_hint(x: torch.Tensor, got: torch.Tensor) -> str:
    """Name the usual mistake that turns ``x``'s round trip into ``got`` (float64)."""
    if not bool(torch.isfinite(got).all()):
        return ("your output holds NaN or Inf: for an all-zero tensor max|x| is 0, so the "
                "scale is 0 and x / s divides by zero; use a tiny positive scale instead "
                "(qc.symmetric_qparams uses torch.finfo(torch.float32).eps)")
    amax = float(x.abs().max())
    if amax == 0.0:
        return "an all-zero tensor must come back as zeros"
    s = amax / 127
    if torch.allclose(got, x.double(), rtol=0.0, atol=0.0):
        return "your output is the input unchanged: quantize to the grid, then dequantize"
    if bool((got == got.round()).all()) and float(got.abs().max()) <= 128:
        return "these look like the integers q: multiply them back by the scale (dequantize)"
    levels = torch.unique(got)
    if levels.numel() > 1:
        step = float(levels.diff().min())
        if not math.isclose(step, s, rel_tol=1e-3):
            for n, name in ((128, "2^(b-1) = 128"), (255, "2^b - 1 = 255"), (256, "2^b = 256")):
                if math.isclose(step, amax / n, rel_tol=1e-3):
                    return (f"your scale divides max|x| by {name}; the symmetric 8-bit grid "
                            "has qmax = 2^(b-1) - 1 = 127 levels on each side of zero")
            return (f"your grid step is {step:.4g} but max|x| / 127 = {s:.4g}: "
                    "check the scale")
    x32 = x.float()
    s32 = x32.abs().max() / 127  # in float32, as a learner computes it
    return hint_for(got, {
        f"you rounded with {name}: round to the nearest level with torch.round":
            torch.clamp(fn(x32 / s32), -127, 127) * s32
        for fn, name in ((torch.floor, "floor"), (torch.trunc, "trunc"), (torch.ceil, "ceil"))
    }, rtol=1e-5, atol=1e-7,
        default="s = max|x| / 127, q = clamp(round(x / s), -127, 127), x_hat = s * q")


@checker
def check_int8_roundtrip(answer) -> None:
    """``answer(x)`` returns x quantized to symmetric INT8 (per tensor) and dequantized."""
    cases = _roundtrip_cases()
    for name, x in cases:
        what = f"int8_roundtrip on {name}"
        got = as_tensor(call(answer, x.clone(), what=what), what)
        qp = symmetric_qparams(x, bits=8)
        want = dequantize(quantize(x, qp), qp)
        if got.is_complex():
            raise CheckFailed(f"{what}: expected real values, got {got.dtype}")
        g = got.detach().double().cpu()
        ok = g.shape == want.shape and torch.allclose(g, want.double(), rtol=1e-5, atol=1e-7)
        hint = "" if ok or g.shape != want.shape else _roundtrip_hint(x, g)
        # Random inputs almost never sit at an exact half step, so computing x / s instead of
        # qc's x * (1 / s) gives the same levels here and a tight tolerance is fair.
        expect_close(g, want.double(), what, rtol=1e-5, atol=1e-7, hint=hint)
    x = cases[0][1]
    qp = symmetric_qparams(x, bits=8)
    err = max_abs_error(x, dequantize(quantize(x, qp), qp))
    passed(
        f"your INT8 round trip matches qc on {len(cases)} tensors, the all-zero one included "
        f"(largest error on the weights: {fmt(err)}, at most half a step of {fmt(float(qp.scale))})"
    )
