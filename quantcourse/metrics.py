"""Error and size metrics: MSE, SQNR, max error, cosine similarity, bytes.

Introduced in ``00_welcome.ipynb`` (bytes saved, error made) and ``02_scale_and_zero_point.ipynb``.
"""

from __future__ import annotations

import math

import torch

from ._validate import check_float_tensor
from .affine import QParams

__all__ = [
    "mse",
    "sqnr_db",
    "max_abs_error",
    "cosine_similarity",
    "tensor_nbytes",
    "model_nbytes",
    "quantized_nbytes",
]


def _pair(x: torch.Tensor, y: torch.Tensor, fn: str) -> tuple[torch.Tensor, torch.Tensor]:
    check_float_tensor(x, fn)
    check_float_tensor(y, fn)
    if x.shape != y.shape:
        raise ValueError(f"{fn}: shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    return x.detach().double(), y.detach().double()


def mse(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean squared difference (computed in float64)."""
    x, y = _pair(x, y, "mse")
    return float(((x - y) ** 2).mean()) if x.numel() else 0.0


def max_abs_error(x: torch.Tensor, y: torch.Tensor) -> float:
    """Largest absolute difference."""
    x, y = _pair(x, y, "max_abs_error")
    return float((x - y).abs().max()) if x.numel() else 0.0


def sqnr_db(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio ``10 log10(sum x^2 / sum (x - x_hat)^2)`` in dB.

    ``inf`` when the reconstruction is exact.
    """
    x, x_hat = _pair(x, x_hat, "sqnr_db")
    noise = float(((x - x_hat) ** 2).sum())
    signal = float((x**2).sum())
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def cosine_similarity(x: torch.Tensor, y: torch.Tensor, dim: int | None = None):
    """Cosine similarity of two tensors as flat vectors (a float), or along ``dim`` (a tensor)."""
    x, y = _pair(x, y, "cosine_similarity")
    if dim is None:
        return float(torch.nn.functional.cosine_similarity(x.reshape(1, -1), y.reshape(1, -1)))
    return torch.nn.functional.cosine_similarity(x, y, dim=dim).float()


def tensor_nbytes(x: torch.Tensor) -> int:
    """Bytes the tensor's elements occupy."""
    return x.numel() * x.element_size()


def model_nbytes(model: torch.nn.Module) -> int:
    """Bytes of every parameter and buffer of a model, as stored."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(tensor_nbytes(t) for t in tensors)


def quantized_nbytes(numel: int, qp: QParams, *, bits: int | None = None) -> int:
    """Bytes a deployed file needs for ``numel`` values quantized with ``qp``.

    Integers packed at ``bits`` each (default: the grid's width, ``qp.bits``), plus one
    float32 scale per scale, plus one integer zero point per scale when any is non-zero
    (a symmetric grid stores none), each zero point in the smallest whole number of bytes.
    """
    bits = qp.bits if bits is None else bits
    if bits < qp.bits:
        raise ValueError(f"quantized_nbytes: {bits} bits cannot hold a {qp.bits}-bit grid")
    n_scales = qp.scale.numel()
    payload = math.ceil(numel * bits / 8)
    zp_bytes = n_scales * math.ceil(qp.bits / 8) if bool((qp.zero_point != 0).any()) else 0
    return payload + 4 * n_scales + zp_bytes
