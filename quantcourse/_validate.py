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
