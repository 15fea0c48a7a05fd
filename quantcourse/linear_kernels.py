"""Quantized linear kernels, functional (tensor in, tensor out): W8A8 and weight-only.

Introduced in ``14_int8_kernels_and_hardware.ipynb``; the layers that wrap them
(``W8A8Linear``, ``W8A16Linear``, ``W4A16Linear``) are in ``qlinear``.

* ``quantize_per_token(x, bits=8)``: symmetric codes with one scale per row of ``x``
  flattened to ``(-1, features)``.
* ``w8a8_linear(x, w_q, w_scale, bias, act_bits=8)``: per-token activations (8 bits, or 7:
  the grid fbgemm multiplies exactly without VNNI) times per-output-channel int8 weights,
  int32 accumulation (``kernels.int8_matmul``), then the fused rescale
  ``out = acc * (s_x[:, None] * s_w[None, :]) + bias``.
* ``weight_only_linear(x, w_q, qp, bias)``: dequantize the weights, then a float matmul
  (bit for bit the fake-quantized simulation). The weight-only layers run fbgemm's
  fp16-weight GEMM on their codes instead where the CPU has it (``_weight_only_fbgemm``).

Both call ``affine``'s unchecked cores after checking their own inputs, so no step checks
the same data twice.
"""

from __future__ import annotations

import math
import struct

import torch
import torch.nn.functional as F

from . import _int8_engines as _fb
from ._validate import check_bits, check_bits_in, check_float_tensor, raise_nonfinite
from .affine import _EPS, QParams, _check_qparams, _dequantize, dequantize, qrange
from .kernels import int8_matmul

__all__ = ["quantize_per_token", "w8a8_linear", "weight_only_linear"]


def _check_weight(w_q: object, fn: str, *, dtype: torch.dtype = torch.int8) -> None:
    if not isinstance(w_q, torch.Tensor):
        raise TypeError(f"{fn}: weight codes must be a torch.Tensor, got {type(w_q).__name__}")
    if w_q.dtype != dtype:
        raise TypeError(f"{fn}: weight codes must be {dtype}, got {w_q.dtype}")
    if w_q.ndim != 2:
        raise ValueError(
            f"{fn}: weight codes must be 2-D (out_features, in_features), got {tuple(w_q.shape)}"
        )


def _check_input(x: object, in_features: int, device: torch.device, fn: str) -> None:
    check_float_tensor(x, fn)
    if x.ndim == 0 or x.shape[-1] != in_features:
        raise ValueError(
            f"{fn}: the input's last dimension must be in_features = {in_features}, "
            f"got shape {tuple(x.shape)}"
        )
    if x.device != device:
        raise ValueError(f"{fn}: the input is on {x.device} but the layer is on {device}")


def _check_bias(bias: object, out_features: int, device: torch.device, fn: str) -> None:
    if bias is None:
        return
    check_float_tensor(bias, fn)
    if tuple(bias.shape) != (out_features,):
        raise ValueError(
            f"{fn}: bias must have shape ({out_features},), got {tuple(bias.shape)}"
        )
    if bias.device != device:
        raise ValueError(f"{fn}: bias is on {bias.device} but the weights are on {device}")


# ---------------------------------------------------------------- functional linear kernels


def _per_token_codes(x2: torch.Tensor, bits: int, fn: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (integer-valued float32) and scales of ``symmetric_qparams(x2, bits, axis=0)`` and
    ``quantize``, bit for bit, without building a ``QParams`` (whose checks cost more than the
    arithmetic at batch 1). ``x2`` is 2-D float32; raises for NaN or Inf."""
    qmax = qrange(bits, signed=True, narrow_range=True)[1]
    if x2.numel() == 0:
        return x2.clone(), x2.new_full((x2.shape[0],), _EPS)
    # max|x| per row is max(-min, max) exactly (abs is exact), and NaN or Inf anywhere in a
    # row makes its scale non-finite, and so the largest scale (max propagates NaN): one
    # number to read back. aminmax along a dimension is many times slower.
    scale = x2.abs().amax(dim=1).div_(qmax).clamp_(min=_EPS)
    if not math.isfinite(scale.max().item()):
        raise_nonfinite(x2, fn)
    # No clamp to [-qmax, qmax] is needed: |x| <= max|x| and 1/s is within 2 roundings of
    # qmax/max|x|, so |x| * (1/s) <= qmax * (1 + 2^-22) < qmax + 0.5 for every qmax < 2^15
    # (and |x| * 2^23 < qmax where s is clamped to eps = 2^-23), which rounds to at most qmax.
    codes = torch.mul(x2, torch.reciprocal(scale).unsqueeze_(1)).round_()
    return codes, scale


def quantize_per_token(x: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, QParams]:
    """Symmetric codes with one scale per row of ``x`` flattened to ``(-1, x.shape[-1])``.

    Returns ``(q, qp)``: ``q`` is 2-D ``(tokens, features)``, ``qp`` per channel along axis 0;
    the same as ``symmetric_qparams(x2, bits, axis=0)`` and ``quantize``, bit for bit.
    """
    fn = "quantize_per_token"
    check_float_tensor(x, fn)
    check_bits(bits, 2, 16, fn)
    if x.ndim == 0:
        raise ValueError(f"{fn}: need at least one dimension (the features), got a scalar")
    codes, scale = _per_token_codes(x.reshape(-1, x.shape[-1]).float(), bits, fn)
    qmin, qmax = qrange(bits, signed=True, narrow_range=True)
    qp = QParams(scale, torch.zeros(scale.shape, dtype=torch.int32), qmin, qmax, 0)
    return codes.to(qp.dtype), qp


def w8a8_linear(
    x: torch.Tensor,
    w_q: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    method: str = "auto",
    act_bits: int = 8,
) -> torch.Tensor:
    """``x @ W.T + bias`` with per-token activations and int8 per-channel weights.

    ``w_q`` is int8 ``(out, in)``, ``w_scale`` float ``(out,)``; the activations are
    quantized symmetrically per token to ``act_bits`` (8, or 7: see
    ``int8_activation_bits``). The int32 accumulator is rescaled in one step:
    ``acc * (s_x[:, None] * s_w[None, :]) + bias``. Returns ``x``'s dtype, shape
    ``(*x.shape[:-1], out)``.
    """
    fn = "w8a8_linear"
    _check_weight(w_q, fn)
    out_f, in_f = w_q.shape
    _check_input(x, in_f, w_q.device, fn)
    check_float_tensor(w_scale, fn)
    if tuple(w_scale.shape) != (out_f,):
        raise ValueError(
            f"{fn}: w_scale must hold one scale per output channel, shape ({out_f},), "
            f"got {tuple(w_scale.shape)}"
        )
    _check_bias(bias, out_f, w_q.device, fn)
    check_bits_in(act_bits, (7, 8), fn, why=" (act_bits: int8 activation codes)")
    codes, s_x = _per_token_codes(x.reshape(-1, in_f).float(), act_bits, fn)
    acc = int8_matmul(codes.to(torch.int8), w_q.t(), method=method).to(torch.float32)
    return _rescale(acc, s_x, w_scale, bias, x.shape, x.dtype)


def _w8a8_fbgemm(x: torch.Tensor, packed: object, w_shape: torch.Size, w_scale: torch.Tensor,
                 bias: torch.Tensor | None, act_bits: int) -> torch.Tensor:
    """``w8a8_linear`` on weights prepacked for fbgemm (``_int8_engines.prepack``), in one pass:
    the activation codes go in as integer-valued floats, the accumulator comes back as
    ``float32(acc)``, exactly what the other paths convert their int32 result to."""
    fn = "W8A8Linear"
    out_f, in_f = w_shape
    _check_input(x, in_f, torch.device("cpu"), fn)
    x2 = x if x.ndim == 2 else x.reshape(-1, in_f)
    x2 = x2 if x2.dtype == torch.float32 else x2.float()
    if x2.shape[0] == 1:
        return _w8a8_fbgemm_one_token(x2, packed, w_scale, bias, act_bits, x.shape, x.dtype)
    codes, s_x = _per_token_codes(x2, act_bits, fn)
    if codes.shape[0] == 0:
        acc = codes.new_zeros((0, out_f))
    else:
        acc = _fb.matmul_codes(codes, packed, act_bits)      # codes: contiguous, fresh
    return _rescale(acc, s_x, w_scale, bias, x.shape, x.dtype)


def _f32(v: float) -> float:
    """``v`` rounded to the nearest float32 (ties to even), as a Python float."""
    return struct.unpack("f", struct.pack("f", v))[0]


def _w8a8_fbgemm_one_token(x2: torch.Tensor, packed: object, w_scale: torch.Tensor,
                           bias: torch.Tensor | None, act_bits: int, shape: torch.Size,
                           dtype: torch.dtype) -> torch.Tensor:
    """``_w8a8_fbgemm`` for a single token (batch 1, the decoding case), bit for bit, with its
    one scale kept as a Python float: half the tensor calls, each worth a few microseconds.

    The float32 arithmetic is reproduced exactly: ``max|x|`` is a float32 value; a quotient of
    two float32 values computed in float64 and rounded once to float32 is the correctly rounded
    float32 quotient (float64 carries more than 2 * 24 + 2 bits); a float32 tensor times a
    Python float that is itself a float32 value multiplies in float32.
    """
    qmax = 2 ** (act_bits - 1) - 1
    amax = x2.abs().max().item()
    if not math.isfinite(amax):
        raise_nonfinite(x2, "W8A8Linear")
    s = max(_f32(amax / qmax), _EPS)
    codes = torch.mul(x2, _f32(1.0 / s)).round_()
    out = _fb.matmul_codes(codes, packed, act_bits).mul_(torch.mul(w_scale, s))
    return _epilogue(out, bias, shape, dtype)


def _rescale(acc: torch.Tensor, s_x: torch.Tensor, w_scale: torch.Tensor,
             bias: torch.Tensor | None, shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """``acc * (s_x[:, None] * s_w[None, :]) + bias`` in place on the float32 ``acc``.

    Written with as few tensor calls as the formula allows (each costs a few microseconds,
    as much as the GEMM's own arithmetic at batch 1): ``view``/``unsqueeze`` rather than
    ``[:, None]`` indexing, no conversion or reshape where the tensor already has its form.
    """
    w = w_scale if w_scale.dtype == torch.float32 else w_scale.float()
    return _epilogue(acc.mul_(torch.mul(s_x.unsqueeze(1), w.view(1, -1))), bias, shape, dtype)


def _epilogue(out: torch.Tensor, bias: torch.Tensor | None, shape: torch.Size,
              dtype: torch.dtype) -> torch.Tensor:
    """The float32 ``(tokens, out)`` result plus ``bias`` (in place), in the input's leading
    shape and dtype: no conversion or reshape where the tensor already has its form."""
    if bias is not None:
        out.add_(bias if bias.dtype == torch.float32 else bias.float())
    if len(shape) != 2:
        out = out.view(*shape[:-1], out.shape[1])
    return out if dtype == torch.float32 else out.to(dtype)


def _weight_only_fbgemm(x: torch.Tensor, packs: list, w_scale: torch.Tensor,
                        group_size: int | None, bias: torch.Tensor | None,
                        in_f: int) -> torch.Tensor:
    """Weight-only linear on fbgemm's fp16-weight GEMM (``_int8_engines.matmul_fp16``):
    ``sum_g (x_g @ Q_g.T) * s_g + bias``, one pack per group of inputs (one in all when the
    scales are per output channel). The codes multiply exactly; the scales come after the
    float32 sums, so the result equals ``x @ dequantize(W).T`` to float32 rounding, not bit
    for bit (``weight_only_linear`` is that one)."""
    fn = "weight_only_linear"
    _check_input(x, in_f, torch.device("cpu"), fn)
    x2 = x if x.ndim == 2 else x.reshape(-1, in_f)
    x2 = x2 if x2.dtype == torch.float32 else x2.float()
    out_f = w_scale.shape[0]
    if x2.shape[0] == 0:
        out = x2.new_zeros((0, out_f))
    elif group_size is None:
        out = _fb.matmul_fp16(x2, packs[0]).mul_(w_scale)
    else:
        out = None
        for g, packed in enumerate(packs):
            part = _fb.matmul_fp16(x2[:, g * group_size:(g + 1) * group_size], packed)
            part.mul_(w_scale[:, g])
            out = part if out is None else out.add_(part)
    return _epilogue(out, bias, x.shape, x.dtype)


def weight_only_linear(
    x: torch.Tensor,
    w_q: torch.Tensor,
    qp: QParams,
    bias: torch.Tensor | None = None,
    *,
    check_codes: bool = True,
) -> torch.Tensor:
    """``x @ dequantize(w_q, qp).T + bias``: weight-only quantization, float activations.

    ``check_codes=False`` skips the check that every code lies in ``[qmin, qmax]`` (a pass
    over the weight) for callers that checked the codes once, as the layers do.
    """
    fn = "weight_only_linear"
    if not isinstance(w_q, torch.Tensor) or w_q.is_floating_point() or w_q.ndim != 2:
        raise TypeError(f"{fn}: w_q must be a 2-D integer tensor of weight codes")
    _check_qparams(qp, None, fn)
    _check_input(x, w_q.shape[1], w_q.device, fn)
    _check_bias(bias, w_q.shape[0], w_q.device, fn)
    if check_codes:
        w_hat = dequantize(w_q, qp)
    else:
        _check_qparams(qp, w_q, fn)                  # device and shapes: the scales only
        # Zero-point-free weights (every layer here) skip the subtraction pass.
        w_hat = _dequantize(w_q, qp, zero_point=bool(qp.zero_point.any()))
    return F.linear(x, w_hat.to(x.dtype), None if bias is None else bias.to(x.dtype))
