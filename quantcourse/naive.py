"""The textbook recipe, transcribed formula by formula, edge cases and all.

Introduced in ``03_symmetric.ipynb`` and ``04_asymmetric.ipynb``, where it runs beside the
package's kernels to show where the plain formulas break:

* symmetric, all-zero input: ``s = 0`` so ``x / s`` is ``0 / 0`` and the result is NaN;
* symmetric: the scale uses ``2^(b-1) - 1`` levels but the clamp allows ``-2^(b-1)``;
* asymmetric, constant input: ``max - min = 0`` so ``s = 0`` and ``x / s`` divides by zero;
* asymmetric, all-positive input: the zero point ``qmin - round(min / s)`` falls below
  ``qmin``, is clamped, and the top of the range is clipped.

These functions deliberately do *not* validate or repair anything: do not use them for real work.
"""

from __future__ import annotations

import torch

__all__ = ["naive_symmetric_quantize", "naive_asymmetric_quantize", "naive_dequantize"]


def naive_symmetric_quantize(x: torch.Tensor, bits: int = 8):
    """Literal symmetric recipe: returns ``(q as float, s)``; NaN on all-zero input."""
    levels = 2 ** (bits - 1) - 1
    s = x.abs().max() / levels
    q = torch.clamp(torch.round(x / s), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return q, s


def naive_asymmetric_quantize(x: torch.Tensor, bits: int = 8):
    """Literal asymmetric recipe on ``[0, 2^b - 1]``: returns ``(q as float, s, z)``."""
    qmin, qmax = 0, 2**bits - 1
    lo, hi = x.min(), x.max()
    s = (hi - lo) / (qmax - qmin)
    z = torch.clamp(qmin - torch.round(lo / s), qmin, qmax)
    q = torch.clamp(torch.round(x / s + z), qmin, qmax)
    return q, s, z


def naive_dequantize(q: torch.Tensor, s, z=0) -> torch.Tensor:
    """Literal dequantization ``s * (q - z)``."""
    return s * (q - z)
