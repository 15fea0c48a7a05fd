"""Blocked CPU fast paths behind ``affine.quantize`` and ``affine.dequantize`` (per tensor).

Introduced with ``affine`` in ``02_scale_and_zero_point.ipynb``; readers of the course can
skip it: the results are bit-identical to the formulas in ``affine``, only faster on large
CPU tensors. Every step is a plain PyTorch op; working block by block keeps the float
temporaries in the cache, so the input is read from memory once and only the result is
written. ``affine`` calls these after its checks; this module imports only ``_validate``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ._validate import raise_nonfinite

# Elements per block (4 MiB of float32): the block and its temporaries stay in the last-level
# cache, so the input is read from DRAM once, and each of the few ops per block is large
# enough that its fixed cost, the wake-up of the intra-op threads included, stays small.
# Measured on a 2-core Zen 4 (64 MiB, qparams + quantize against a copy, two threads):
# 2^16 elements 0.29x (symmetric) / 0.23x (asymmetric), 2^18 0.45x / 0.38x,
# 2^20 0.54x / 0.51x; one thread 0.42x / 0.38x at 2^18, 0.47x / 0.44x at 2^20.
BLOCK = 1 << 20


def applies(x: torch.Tensor, per_tensor: bool) -> bool:
    """Whether the blocked path pays: a per-tensor grid, a CPU tensor of more than a block."""
    return per_tensor and x.device.type == "cpu" and x.numel() > BLOCK


def quantize_per_tensor_cpu(x: torch.Tensor, inv: float, z: int, qmin: int, qmax: int,
                            dtype: torch.dtype, fn: str) -> torch.Tensor:
    """``clamp(round(x * inv) + z, qmin, qmax)`` block by block, checking for NaN and Inf.

    ``x`` is a contiguous float32 CPU tensor, ``dtype`` the grid's storage dtype.
    """
    flat = x.reshape(-1)
    out = torch.empty(flat.shape, dtype=dtype)
    buf = torch.empty(min(BLOCK, flat.numel()), dtype=torch.float32)
    # PyTorch converts float to int8 several times faster than float to uint8, so a uint8
    # grid is computed shifted down by 128, stored through an int8 view, and shifted back
    # by flipping the top bit ((v - 128) mod 256 xor 0x80 == v).
    shift = 128 if dtype == torch.uint8 else 0
    store = out.view(torch.int8) if shift else out
    # Clamping to [qmin - z, qmax - z] before adding z equals clamping after: all integers.
    lo, hi = qmin - z, qmax - z
    for xb, qb in zip(flat.split(BLOCK), store.split(BLOCK), strict=True):
        b = buf[: xb.numel()]
        torch.mul(xb, inv, out=b)
        # NaN or Inf in the block make its scaled sum non-finite (a finite value that
        # overflows once scaled can too: the exact check tells them apart).
        if not math.isfinite(float(b.sum())) and not bool(torch.isfinite(xb).all()):
            raise_nonfinite(x, fn)
        b.round_()
        b.clamp_(lo, hi)
        if z - shift:
            b.add_(z - shift)
        qb.copy_(b)
        if shift:
            qb.view(torch.uint8).bitwise_xor_(0x80)
    return out.reshape(x.shape)


def dequantize_per_tensor_cpu(q: torch.Tensor, s: float, z: int,
                              check: Callable[[torch.Tensor], None]) -> torch.Tensor:
    """``s * (q - z)`` in float32 block by block; ``check`` sees each block of codes while it
    is in cache (and raises for codes outside the grid)."""
    flat = q.reshape(-1)
    out = torch.empty(flat.shape, dtype=torch.float32)
    for qb, ob in zip(flat.split(BLOCK), out.split(BLOCK), strict=True):
        check(qb)
        ob.copy_(qb)
        if z:
            ob.sub_(z)
        ob.mul_(s)
    return out.reshape(q.shape)
