"""Stochastic rounding: round down or up at random so that the rounding is right on average.

Introduced in ``17_stochastic_rounding.ipynb``.

Round-to-nearest sends ``x`` to the closest grid point every time, so a value a third of the
way between two grid points always loses that third: summed over many small updates the
error adds up instead of cancelling. Stochastic rounding goes up with probability equal to
the distance from the point below (in units of the spacing),

    SR(x) = floor(x) + Bernoulli(x - floor(x)),

so ``E[SR(x)] = x`` exactly and the error has variance ``p (1 - p)`` (``p`` the fractional
part), at most ``1/4`` of a spacing squared. Randomness comes from an explicit
``torch.Generator``: the same generator state gives the same result.

* ``stochastic_round(x, *, generator=None)``: to the integers (the grid of ``quantize``:
  ``qc.quantize(x, qp, rounding="stochastic")`` applies it to ``x * (1/s)``).
* ``stochastic_cast(x, dtype, *, generator=None)``: to the values of a narrower float
  format (float16, bfloat16, float32): the two neighbours of ``x`` in that format, up with
  probability ``(x - lo) / (hi - lo)``.
"""

from __future__ import annotations

import torch

from ._validate import check_finite, check_float_tensor
from .affine import _check_generator, _stochastic_round

__all__ = ["stochastic_round", "stochastic_cast"]

_NARROW = (torch.float16, torch.bfloat16, torch.float32)


def stochastic_round(
    x: torch.Tensor, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Round each element to ``floor(x)`` or ``floor(x) + 1``, up with probability ``x - floor(x)``.

    Unbiased: ``E[stochastic_round(x)] = x``. Returns a tensor of ``x``'s dtype and shape
    holding integers. float16 and bfloat16 inputs are rounded in float32 (their own uniform
    draws would be too coarse to resolve small fractions); the integers convert back exactly.
    ``generator`` (a ``torch.Generator`` on ``x``'s device) makes the draws reproducible; the
    same generator state always gives the same result.
    """
    fn = "stochastic_round"
    check_float_tensor(x, fn)
    _check_generator(generator, x.device, fn)
    check_finite(x, fn)
    if x.numel() == 0:
        return x.clone()
    work = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    return _stochastic_round(work, generator).to(x.dtype)


def stochastic_cast(
    x: torch.Tensor, dtype: torch.dtype, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Convert ``x`` to the float ``dtype`` with stochastic rounding instead of round-to-nearest.

    Each element goes to one of its two neighbours ``lo <= x < hi`` among the values of
    ``dtype`` (float16, bfloat16 or float32), to ``hi`` with probability
    ``(x - lo) / (hi - lo)``, computed in float64, so the result is unbiased in expectation.
    Values already representable stay. ``x`` must be finite and at most ``dtype``'s largest
    finite value in magnitude (no overflow to infinity); values below the smallest normal
    number round between subnormals, as the format defines them.
    """
    fn = "stochastic_cast"
    check_float_tensor(x, fn)
    if dtype not in _NARROW:
        raise ValueError(f"{fn}: dtype must be one of {[str(d) for d in _NARROW]}, got {dtype}")
    _check_generator(generator, x.device, fn)
    check_finite(x, fn)
    if x.numel() == 0:
        return torch.empty(x.shape, dtype=dtype, device=x.device)
    big = torch.finfo(dtype).max
    amax = float(x.abs().max())
    if amax > big:
        raise ValueError(f"{fn}: |x| reaches {amax:.6g}, beyond the largest finite {dtype} "
                         f"({big:.6g}); scale the data first")
    x64 = x.double()
    near = x64.to(dtype)  # round-to-nearest: one of the two neighbours
    above = near.double() > x64
    lo = torch.where(above, torch.nextafter(near, torch.full_like(near, -float("inf"))), near)
    hi = torch.nextafter(lo, torch.full_like(lo, float("inf")))
    lo64, hi64 = lo.double(), hi.double()
    p = (x64 - lo64) / (hi64 - lo64)  # 0 where x is representable (lo == x)
    u = torch.rand(x.shape, generator=generator, dtype=torch.float64, device=x.device)
    return torch.where(u < p, hi, lo)
