"""Number formats: floating-point bit layouts, ranges and epsilon; integer ranges; fixed point.

Introduced in ``01_number_formats.ipynb``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._validate import check_bits, check_float_tensor, check_int_in
from .affine import QParams, dequantize, qrange, quantize

__all__ = [
    "FloatLayout",
    "FLOAT_LAYOUTS",
    "float_layout",
    "decompose_float",
    "compose_float",
    "format_info",
    "to_fixed",
    "from_fixed",
    "fixed_qparams",
]


@dataclass(frozen=True)
class FloatLayout:
    """Bit layout of an IEEE-754-style binary float: 1 sign bit, exponent, mantissa."""

    name: str
    exponent_bits: int
    mantissa_bits: int

    @property
    def bits(self) -> int:
        return 1 + self.exponent_bits + self.mantissa_bits

    @property
    def bias(self) -> int:
        return 2 ** (self.exponent_bits - 1) - 1

    @property
    def max(self) -> float:
        """Largest finite value: ``(2 - 2^-m) * 2^bias``."""
        return (2.0 - 2.0**-self.mantissa_bits) * 2.0**self.bias

    @property
    def min_normal(self) -> float:
        """Smallest positive normal value: ``2^(1 - bias)``."""
        return 2.0 ** (1 - self.bias)

    @property
    def min_subnormal(self) -> float:
        """Smallest positive value: ``2^(1 - bias - m)``."""
        return 2.0 ** (1 - self.bias - self.mantissa_bits)

    @property
    def eps(self) -> float:
        """Gap between 1.0 and the next representable value: ``2^-m``."""
        return 2.0**-self.mantissa_bits

    @property
    def decimal_digits(self) -> float:
        """Roughly how many significant decimal digits the mantissa carries."""
        import math

        return (self.mantissa_bits + 1) * math.log10(2)


FLOAT_LAYOUTS: dict[torch.dtype, FloatLayout] = {
    torch.float32: FloatLayout("FP32", 8, 23),
    torch.float16: FloatLayout("FP16", 5, 10),
    torch.bfloat16: FloatLayout("BF16", 8, 7),
}
_INT_VIEW = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}


def float_layout(dtype: torch.dtype) -> FloatLayout:
    """The bit layout of ``torch.float32``, ``torch.float16`` or ``torch.bfloat16``."""
    if dtype not in FLOAT_LAYOUTS:
        names = ", ".join(str(d) for d in FLOAT_LAYOUTS)
        raise ValueError(f"float_layout: {dtype} is not one of {names}")
    return FLOAT_LAYOUTS[dtype]


def decompose_float(x: torch.Tensor | float, dtype: torch.dtype = torch.float32) -> dict:
    """Split values into sign, biased exponent and mantissa fields (integer tensors).

    ``x`` is first rounded to ``dtype``. Returns a dict with ``sign``, ``exponent``,
    ``mantissa`` (int64 tensors), ``bits`` (a list of bit strings ``s|eeee|mmmm``) and
    ``value`` (the values as stored in ``dtype``, as float64).
    """
    layout = float_layout(dtype)
    t = torch.as_tensor(x, dtype=torch.float64) if not isinstance(x, torch.Tensor) else x
    check_float_tensor(t, "decompose_float")
    t = t.to(dtype)
    raw = t.view(_INT_VIEW[dtype]).to(torch.int64) & ((1 << layout.bits) - 1)
    m, e = layout.mantissa_bits, layout.exponent_bits
    sign = (raw >> (e + m)) & 1
    exponent = (raw >> m) & ((1 << e) - 1)
    mantissa = raw & ((1 << m) - 1)
    bits = [
        f"{s}|{ex:0{e}b}|{ma:0{m}b}"
        for s, ex, ma in zip(
            sign.reshape(-1).tolist(), exponent.reshape(-1).tolist(), mantissa.reshape(-1).tolist(),
            strict=True,
        )
    ]
    return {
        "sign": sign,
        "exponent": exponent,
        "mantissa": mantissa,
        "bits": bits,
        "value": t.to(torch.float64),
    }


def compose_float(sign, exponent, mantissa, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Rebuild values from their fields with the textbook formula (normals, subnormals, inf/NaN).

    ``(-1)^s * 2^(e - bias) * (1 + m / 2^M)`` for normal numbers,
    ``(-1)^s * 2^(1 - bias) * (m / 2^M)`` for subnormals; float64 result.
    """
    layout = float_layout(dtype)
    s = torch.as_tensor(sign, dtype=torch.int64)
    e = torch.as_tensor(exponent, dtype=torch.int64)
    m = torch.as_tensor(mantissa, dtype=torch.int64)
    frac = m.double() / 2**layout.mantissa_bits
    normal = (1 + frac) * torch.pow(2.0, (e - layout.bias).double())
    subnormal = frac * 2.0 ** (1 - layout.bias)
    top = (1 << layout.exponent_bits) - 1
    special = torch.where(frac == 0, torch.full_like(frac, float("inf")), torch.nan)
    mag = torch.where(e == 0, subnormal, torch.where(e == top, special, normal))
    return torch.where(s == 1, -mag, mag)


def format_info(dtype: torch.dtype) -> dict:
    """Bits, range and resolution of a float or integer dtype, derived from its layout."""
    if dtype in FLOAT_LAYOUTS:
        f = FLOAT_LAYOUTS[dtype]
        return {
            "name": f.name,
            "bits": f.bits,
            "exponent_bits": f.exponent_bits,
            "mantissa_bits": f.mantissa_bits,
            "max": f.max,
            "min_normal": f.min_normal,
            "min_subnormal": f.min_subnormal,
            "eps": f.eps,
            "decimal_digits": f.decimal_digits,
        }
    ints = {
        torch.int8: (8, True), torch.uint8: (8, False), torch.int16: (16, True),
        torch.int32: (32, True), torch.int64: (64, True),
    }
    if dtype not in ints:
        raise ValueError(f"format_info: unsupported dtype {dtype}")
    bits, signed = ints[dtype]
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    name = ("INT" if signed else "UINT") + str(bits)
    return {"name": name, "bits": bits, "min": lo, "max": hi, "levels": hi - lo + 1, "eps": 1}


def fixed_qparams(int_bits: int, frac_bits: int, *, signed: bool = True) -> QParams:
    """The affine parameters of a Qm.n fixed-point format: scale ``2^-n``, zero point 0.

    A signed Qm.n number has 1 sign bit, ``m`` integer bits and ``n`` fraction bits.
    """
    check_int_in(int_bits, "int_bits", "fixed_qparams", 0)
    check_int_in(frac_bits, "frac_bits", "fixed_qparams", 0)
    total = int_bits + frac_bits + (1 if signed else 0)
    check_bits(total, 2 if signed else 1, 16, "fixed_qparams (total width)")
    qmin, qmax = qrange(total, signed=signed)
    return QParams(torch.tensor(2.0**-frac_bits), torch.tensor(0), qmin, qmax)


def to_fixed(
    x: torch.Tensor, int_bits: int, frac_bits: int, *, signed: bool = True
) -> torch.Tensor:
    """Round to the nearest Qm.n value (ties to even) and saturate; returns the integers."""
    return quantize(x, fixed_qparams(int_bits, frac_bits, signed=signed).to(x.device))


def from_fixed(
    q: torch.Tensor, int_bits: int, frac_bits: int, *, signed: bool = True
) -> torch.Tensor:
    """The real values (float32) of Qm.n integers: ``q * 2^-n``."""
    return dequantize(q, fixed_qparams(int_bits, frac_bits, signed=signed).to(q.device))
