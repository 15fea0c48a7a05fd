"""Input checks shared by every public function (DESIGN section 6): fail early and clearly."""

from __future__ import annotations

import torch


def check_float_tensor(x: object, fn: str) -> None:
    """Raise ``TypeError`` unless ``x`` is a real floating-point tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn}: expected a torch.Tensor, got {type(x).__name__}")
    if x.is_complex():
        raise TypeError(f"{fn}: expected a real floating-point tensor, got complex {x.dtype}")
    if not x.is_floating_point():
        raise TypeError(
            f"{fn}: expected a floating-point tensor, got {x.dtype}; "
            "convert with x.float() if these are real values"
        )


def check_bits(bits: object, lo: int, hi: int, fn: str) -> None:
    """Raise ``ValueError`` unless ``bits`` is an int in ``[lo, hi]``."""
    if not isinstance(bits, int) or isinstance(bits, bool):
        raise ValueError(f"{fn}: bits must be an int, got {bits!r}")
    if not lo <= bits <= hi:
        raise ValueError(f"{fn}: bits must be between {lo} and {hi}, got {bits}")


def check_axis(axis: object, ndim: int, fn: str) -> int:
    """Raise unless ``axis`` is an int that indexes a tensor of ``ndim`` dimensions; return it
    as a non-negative index (``TypeError`` for a non-int, ``ValueError`` out of range)."""
    if not isinstance(axis, int) or isinstance(axis, bool):
        raise TypeError(f"{fn}: axis must be an int or None, got {type(axis).__name__}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{fn}: axis {axis} is out of range for a tensor with {ndim} dimensions")
    return axis % ndim
