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
    "quantized_model_nbytes",
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


def quantized_model_nbytes(
    model: torch.nn.Module,
    bits: int,
    *,
    axis: int | None = 0,
    group_size: int | None = None,
    symmetric: bool = True,
) -> int:
    """Bytes a deployed file would hold with every weight matrix quantized to ``bits``.

    Counts what the file stores, not the simulated float tensors: each parameter with two or
    more dimensions as packed ``bits``-bit integers plus its scales (and zero points when
    asymmetric), at the given granularity (per output channel by default); every other
    parameter and buffer (biases, norms) at its own size. With ``group_size``, each output
    row's flattened inputs are split into groups of that many values, one scale each.
    """
    from .affine import asymmetric_qparams, symmetric_qparams

    if group_size is not None and axis not in (None, 0):
        raise ValueError("quantized_model_nbytes: per-group sizes group each output row; "
                         "leave axis at 0 or None")
    make = symmetric_qparams if symmetric else asymmetric_qparams
    total = 0
    for p in model.parameters():
        w = p.detach()
        if w.ndim >= 2:
            if group_size is not None:
                # Groups run along each output row's flattened inputs (a conv kernel's
                # in_channels * kh * kw), as weight-only formats store them.
                rows = w.float().reshape(w.shape[0], -1)
                if rows.shape[1] % group_size:
                    raise ValueError(
                        f"quantized_model_nbytes: group_size {group_size} does not divide the "
                        f"{rows.shape[1]} inputs per output row of a weight shaped {tuple(w.shape)}"
                    )
                qp = make(rows, bits, group_size=group_size)
            else:
                qp = make(w.float(), bits, axis=axis)
            total += quantized_nbytes(w.numel(), qp, bits=bits)
        else:
            total += tensor_nbytes(w)
    return total + sum(tensor_nbytes(b) for b in model.buffers())
