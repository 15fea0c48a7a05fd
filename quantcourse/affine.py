"""Affine (uniform) quantization: scale, zero point, quantize, dequantize, fake quantize.

Introduced in ``02_scale_and_zero_point.ipynb`` and used by every later notebook.
This is the base of the package: every other module quantizes through ``QParams``,
``quantize`` and ``dequantize``; this module imports nothing else from ``quantcourse``
except the input checks in ``_validate``.

Conventions (DESIGN section 4), matched bit for bit with
``torch.fake_quantize_per_tensor_affine`` / ``torch.fake_quantize_per_channel_affine``:

* quantize:   ``q = clamp(round_half_even(x * (1/s)) + z, qmin, qmax)``, ``1/s`` in float32
* dequantize: ``x_hat = s * (q - z)`` in float32
* symmetric:  ``z = 0``; narrow range ``[-(2^(b-1)-1), 2^(b-1)-1]`` with ``s = max|x| / qmax``,
  or full range ``[-2^(b-1), 2^(b-1)-1]`` with ``s = max|x| / ((qmax - qmin) / 2)``
* asymmetric: range widened to include 0, ``s = (max - min) / (qmax - qmin)``,
  ``z = clamp(qmin - round(min / s), qmin, qmax)``
* every scale is at least float32 eps, so constant and all-zero tensors are safe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ._validate import check_axis, check_bits, check_float_tensor

__all__ = [
    "QParams",
    "symmetric_qparams",
    "asymmetric_qparams",
    "qrange",
    "quantize",
    "dequantize",
    "fake_quantize",
]

_EPS = torch.finfo(torch.float32).eps
# Elements per block in the CPU per-tensor fast path: small enough that the block and its
# temporaries stay in the L2 cache, large enough that Python overhead per block is negligible.
_BLOCK = 1 << 18


def qrange(bits: int, *, signed: bool, narrow_range: bool = False) -> tuple[int, int]:
    """Return ``(qmin, qmax)`` for a ``bits``-wide integer grid."""
    check_bits(bits, 1, 16, "qrange")
    if signed:
        qmax = 2 ** (bits - 1) - 1
        qmin = -qmax if narrow_range else -(2 ** (bits - 1))
    else:
        qmin, qmax = 0, 2**bits - 1
        if narrow_range:
            qmin = 1
    if qmin >= qmax:
        raise ValueError(
            f"a {bits}-bit {'narrow ' if narrow_range else ''}"
            f"{'signed' if signed else 'unsigned'} grid has no room: qmin={qmin}, qmax={qmax}"
        )
    return qmin, qmax


def _storage_dtype(qmin: int, qmax: int) -> torch.dtype:
    if qmin >= -128 and qmax <= 127:
        return torch.int8
    if qmin >= 0 and qmax <= 255:
        return torch.uint8
    if qmin >= -(2**15) and qmax <= 2**15 - 1:
        return torch.int16
    return torch.int32


@dataclass(frozen=True, eq=False)
class QParams:
    """Quantization parameters: the grid ``[qmin, qmax]`` and how real numbers map onto it.

    ``scale`` (float32) and ``zero_point`` (int32) are tensors: 0-d per tensor, shape
    ``(C,)`` per channel along ``axis``, shape ``(*x.shape[:-1], n_groups)`` per group of
    ``group_size`` consecutive elements along the last dimension.
    """

    scale: torch.Tensor
    zero_point: torch.Tensor
    qmin: int
    qmax: int
    axis: int | None = None
    group_size: int | None = None

    def __post_init__(self) -> None:
        scale = torch.as_tensor(self.scale)
        if not scale.is_floating_point():
            raise TypeError(f"QParams: scale must be a float tensor, got {scale.dtype}")
        zp = torch.as_tensor(self.zero_point)
        if zp.is_floating_point() or zp.is_complex():
            if not torch.equal(zp, zp.round()):
                raise ValueError("QParams: zero_point must hold integers")
        object.__setattr__(self, "scale", scale.to(torch.float32))
        object.__setattr__(self, "zero_point", zp.to(device=scale.device, dtype=torch.int32))
        if int(self.qmin) >= int(self.qmax):
            raise ValueError(f"QParams: qmin ({self.qmin}) must be below qmax ({self.qmax})")
        if self.axis is not None and self.group_size is not None:
            raise ValueError("QParams: give axis (per channel) or group_size (per group), not both")
        if self.group_size is not None and self.group_size < 1:
            raise ValueError(f"QParams: group_size must be positive, got {self.group_size}")
        if self.scale.shape != self.zero_point.shape:
            raise ValueError(
                f"QParams: scale shape {tuple(self.scale.shape)} and zero_point shape "
                f"{tuple(self.zero_point.shape)} differ"
            )
        if self.scale.numel():
            smin, smax = torch.aminmax(self.scale)
            if not bool(torch.isfinite(smax)) or not bool(torch.isfinite(smin)):
                raise ValueError("QParams: scale must be finite")
            if float(smin) <= 0:
                raise ValueError(f"QParams: scale must be positive, got a minimum of {float(smin)}")
        if self.zero_point.numel():
            zmin, zmax = torch.aminmax(self.zero_point)
            if int(zmin) < self.qmin or int(zmax) > self.qmax:
                raise ValueError(
                    f"QParams: zero_point must lie in [qmin, qmax] = [{self.qmin}, {self.qmax}], "
                    f"got values in [{int(zmin)}, {int(zmax)}]"
                )

    @property
    def bits(self) -> int:
        """Bits needed to store one element of the grid."""
        return max(1, (self.qmax - self.qmin).bit_length())

    @property
    def dtype(self) -> torch.dtype:
        """Integer dtype that ``quantize`` returns for this grid."""
        return _storage_dtype(self.qmin, self.qmax)

    @property
    def granularity(self) -> str:
        """``"tensor"``, ``"channel"`` or ``"group"``."""
        if self.axis is not None:
            return "channel"
        return "group" if self.group_size is not None else "tensor"

    def to(self, device: torch.device | str) -> QParams:
        """The same parameters on another device."""
        return QParams(
            self.scale.to(device), self.zero_point.to(device), self.qmin, self.qmax,
            self.axis, self.group_size,
        )

    def __repr__(self) -> str:
        if self.scale.numel() == 1:
            s = f"scale={float(self.scale):.6g}, zero_point={int(self.zero_point)}"
        else:
            s = f"scale.shape={tuple(self.scale.shape)}"
        return (
            f"QParams({s}, qmin={self.qmin}, qmax={self.qmax}, "
            f"granularity={self.granularity!r}"
            + (f", axis={self.axis}" if self.axis is not None else "")
            + (f", group_size={self.group_size}" if self.group_size is not None else "")
            + ")"
        )


# ---------------------------------------------------------------- ranges per granularity


def _check_group(x: torch.Tensor, group_size: int, fn: str) -> None:
    if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 1:
        raise ValueError(f"{fn}: group_size must be a positive int, got {group_size!r}")
    if x.ndim == 0:
        raise ValueError(f"{fn}: per-group quantization needs at least one dimension")
    if x.shape[-1] % group_size:
        raise ValueError(
            f"{fn}: group_size {group_size} does not divide the last dimension ({x.shape[-1]})"
        )


def _minmax(x: torch.Tensor, axis: int | None, group_size: int | None, fn: str):
    """Min and max per tensor, per slice along ``axis`` or per group; checks for NaN/Inf."""
    if axis is not None and group_size is not None:
        raise ValueError(f"{fn}: give axis (per channel) or group_size (per group), not both")
    if axis is not None:
        if x.ndim == 0:
            raise ValueError(f"{fn}: per-channel quantization needs at least one dimension")
        axis = check_axis(axis, x.ndim, fn)
        if x.numel() == 0:
            zeros = x.new_zeros(x.shape[axis])
            return zeros, zeros, axis
        flat = x.movedim(axis, 0).reshape(x.shape[axis], -1)
        mn, mx = torch.aminmax(flat, dim=1)
    elif group_size is not None:
        _check_group(x, group_size, fn)
        shape = (*x.shape[:-1], x.shape[-1] // group_size)
        if x.numel() == 0:
            zeros = x.new_zeros(shape)
            return zeros, zeros, None
        mn, mx = torch.aminmax(x.reshape(*shape, group_size), dim=-1)
    else:
        if x.numel() == 0:
            zero = x.new_zeros(())
            return zero, zero, None
        mn, mx = torch.aminmax(x)
    # NaN propagates through min/max and Inf lands in them, so finite extremes prove the
    # whole tensor finite without another pass over the data.
    if not (bool(torch.isfinite(mn).all()) and bool(torch.isfinite(mx).all())):
        _raise_nonfinite(x, fn)
    return mn.float(), mx.float(), axis


def _raise_nonfinite(x: torch.Tensor, fn: str) -> None:
    n_nan = int(torch.isnan(x).sum())
    n_inf = int(torch.isinf(x).sum())
    raise ValueError(
        f"{fn}: the input holds {n_nan} NaN and {n_inf} infinite value(s) out of {x.numel()}; "
        "quantize only finite data"
    )


def symmetric_qparams(
    x: torch.Tensor,
    bits: int = 8,
    *,
    axis: int | None = None,
    group_size: int | None = None,
    narrow_range: bool = True,
) -> QParams:
    """Scale for a grid symmetric about zero (``zero_point = 0``) covering ``max|x|``."""
    fn = "symmetric_qparams"
    check_float_tensor(x, fn)
    check_bits(bits, 2, 16, fn)
    mn, mx, axis = _minmax(x, axis, group_size, fn)
    qmin, qmax = qrange(bits, signed=True, narrow_range=narrow_range)
    amax = torch.maximum(-mn, mx)
    denom = qmax if narrow_range else (qmax - qmin) / 2
    scale = torch.clamp(amax / denom, min=_EPS)
    zp = torch.zeros(scale.shape, dtype=torch.int32, device=scale.device)
    return QParams(scale, zp, qmin, qmax, axis, group_size)


def asymmetric_qparams(
    x: torch.Tensor,
    bits: int = 8,
    *,
    axis: int | None = None,
    group_size: int | None = None,
    signed: bool = False,
) -> QParams:
    """Scale and zero point for a grid spanning ``[min(x, 0), max(x, 0)]``."""
    fn = "asymmetric_qparams"
    check_float_tensor(x, fn)
    check_bits(bits, 1, 16, fn)
    mn, mx, axis = _minmax(x, axis, group_size, fn)
    qmin, qmax = qrange(bits, signed=signed)
    # Widening the range to include 0 keeps real zero exactly representable (padding, ReLU
    # zeros) and keeps the zero point inside [qmin, qmax].
    mn = torch.clamp(mn, max=0.0)
    mx = torch.clamp(mx, min=0.0)
    scale = torch.clamp((mx - mn) / float(qmax - qmin), min=_EPS)
    zp = qmin - torch.round(mn / scale)
    zp = torch.clamp(zp, qmin, qmax).to(torch.int32)
    return QParams(scale, zp, qmin, qmax, axis, group_size)


# ---------------------------------------------------------------- quantize / dequantize


def _broadcast(qp: QParams, x: torch.Tensor, fn: str):
    """Scale and zero point shaped to broadcast against ``x`` (grouped: ``x`` is reshaped)."""
    if qp.axis is not None:
        if x.ndim == 0:
            raise ValueError(f"{fn}: per-channel QParams need a tensor with dimensions")
        axis = check_axis(qp.axis, x.ndim, fn)
        if qp.scale.numel() != x.shape[axis]:
            raise ValueError(
                f"{fn}: QParams hold {qp.scale.numel()} scales but axis {axis} of the input "
                f"has {x.shape[axis]} channels"
            )
        shape = [1] * x.ndim
        shape[axis] = -1
        return qp.scale.reshape(shape), qp.zero_point.reshape(shape), x
    if qp.group_size is not None:
        _check_group(x, qp.group_size, fn)
        gshape = (*x.shape[:-1], x.shape[-1] // qp.group_size)
        if tuple(qp.scale.shape) != gshape:
            raise ValueError(
                f"{fn}: QParams scale shape {tuple(qp.scale.shape)} does not match the "
                f"{gshape} groups of the input"
            )
        xg = x.reshape(*gshape, qp.group_size)
        return qp.scale.unsqueeze(-1), qp.zero_point.reshape(gshape).unsqueeze(-1), xg
    if qp.scale.numel() != 1:
        raise ValueError(f"{fn}: per-tensor QParams must hold one scale, got {qp.scale.numel()}")
    return qp.scale.reshape(()), qp.zero_point.reshape(()), x


def _check_device(qp: QParams, x: torch.Tensor, fn: str) -> None:
    if qp.scale.device != x.device:
        raise ValueError(
            f"{fn}: QParams live on {qp.scale.device} but the input is on {x.device}; "
            "use qp.to(x.device)"
        )


def _quantize_per_tensor_cpu(x: torch.Tensor, inv: float, z: int, qp: QParams, fn: str):
    """Blocked CPU path: each block is scaled, checked, rounded and clamped while in cache.

    Every step is a plain PyTorch op; working block by block keeps the float temporaries in
    the L2 cache, so the input is read from memory once and only the integers are written.
    """
    flat = x.reshape(-1)
    out = torch.empty(flat.shape, dtype=qp.dtype)
    buf = torch.empty(min(_BLOCK, flat.numel()), dtype=torch.float32)
    # PyTorch converts float to int8 several times faster than float to uint8, so a uint8
    # grid is computed shifted down by 128, stored through an int8 view, and shifted back
    # by flipping the top bit ((v - 128) mod 256 xor 0x80 == v).
    shift = 128 if qp.dtype == torch.uint8 else 0
    store = out.view(torch.int8) if shift else out
    # Clamping to [qmin - z, qmax - z] before adding z equals clamping after: all integers.
    lo, hi = qp.qmin - z, qp.qmax - z
    for xb, qb in zip(flat.split(_BLOCK), store.split(_BLOCK), strict=True):
        b = buf[: xb.numel()]
        torch.mul(xb, inv, out=b)
        # NaN or Inf in the block make its scaled sum non-finite (a finite value that
        # overflows once scaled can too: the exact check tells them apart).
        if not math.isfinite(float(b.sum())) and not bool(torch.isfinite(xb).all()):
            _raise_nonfinite(x, fn)
        b.round_()
        b.clamp_(lo, hi)
        if z - shift:
            b.add_(z - shift)
        qb.copy_(b)
        if shift:
            qb.view(torch.uint8).bitwise_xor_(0x80)
    return out.reshape(x.shape)


def _check_generator(generator: object, device: torch.device, fn: str) -> None:
    """Raise unless ``generator`` is None or a ``torch.Generator`` on ``device``'s type."""
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"{fn}: generator must be a torch.Generator or None, "
                        f"got {type(generator).__name__}")
    if generator.device.type != device.type:
        raise ValueError(f"{fn}: the generator lives on {generator.device} but the input is on "
                         f"{device}; create it with torch.Generator(device=x.device)")


def _stochastic_round(t: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``floor(t) + Bernoulli(t - floor(t))``: up with probability equal to the fraction.

    One uniform draw per element, in ``t``'s dtype, compared with the fraction: ``u < frac``
    happens with probability ``frac`` exactly for a uniform ``u`` in ``[0, 1)``, so integers
    (fraction 0) never move. Callers check their inputs; this is the shared kernel.
    """
    low = torch.floor(t)
    u = torch.rand(t.shape, generator=generator, dtype=t.dtype, device=t.device)
    return low + (u < t - low).to(t.dtype)


def quantize(
    x: torch.Tensor,
    qp: QParams,
    *,
    rounding: str = "nearest",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Map floats to integers: ``clamp(round_half_even(x * (1/s)) + z, qmin, qmax)``.

    ``rounding="stochastic"`` rounds ``x * (1/s)`` down or up at random instead, up with
    probability equal to its fractional part (unbiased before clamping; drawn from
    ``generator``, introduced in ``16_stochastic_rounding.ipynb``). The default is unchanged.
    """
    fn = "quantize"
    check_float_tensor(x, fn)
    if not isinstance(qp, QParams):
        raise TypeError(f"{fn}: qp must be a QParams, got {type(qp).__name__}")
    if rounding not in ("nearest", "stochastic"):
        raise ValueError(f"{fn}: rounding must be 'nearest' or 'stochastic', got {rounding!r}")
    if rounding == "nearest" and generator is not None:
        raise ValueError(f"{fn}: a generator only makes sense with rounding='stochastic'")
    _check_generator(generator, x.device, fn)
    _check_device(qp, x, fn)
    if x.numel() == 0:
        _broadcast(qp, x, fn)
        return torch.empty(x.shape, dtype=qp.dtype, device=x.device)
    x32 = x.float()
    if rounding == "stochastic":
        scale, zp, xv = _broadcast(qp, x32, fn)
        if not bool(torch.isfinite(xv).all()):
            _raise_nonfinite(x, fn)
        q = _stochastic_round(xv * torch.reciprocal(scale), generator) + zp
        return torch.clamp(q, qp.qmin, qp.qmax).to(qp.dtype).reshape(x.shape)
    if (
        qp.axis is None and qp.group_size is None and x.device.type == "cpu"
        and x32.numel() > _BLOCK
    ):
        if qp.scale.numel() != 1:
            _broadcast(qp, x, fn)
        inv = float(torch.reciprocal(qp.scale.reshape(())))
        return _quantize_per_tensor_cpu(x32.contiguous(), inv, int(qp.zero_point), qp, fn)
    scale, zp, xv = _broadcast(qp, x32, fn)
    if not bool(torch.isfinite(xv).all()):
        _raise_nonfinite(x, fn)
    q = torch.round(xv * torch.reciprocal(scale)) + zp
    q = torch.clamp(q, qp.qmin, qp.qmax).to(qp.dtype)
    return q.reshape(x.shape)


def _check_codes(q: torch.Tensor, qp: QParams, fn: str) -> None:
    lo, hi = torch.aminmax(q)
    if int(lo) < qp.qmin or int(hi) > qp.qmax:
        raise ValueError(
            f"{fn}: integers span [{int(lo)}, {int(hi)}], outside the grid "
            f"[{qp.qmin}, {qp.qmax}] of these QParams"
        )


def _dequantize_per_tensor_cpu(q: torch.Tensor, s: float, z: int, qp: QParams, fn: str):
    """Blocked CPU path: convert, shift and scale each block while it is in cache."""
    flat = q.reshape(-1)
    out = torch.empty(flat.shape, dtype=torch.float32)
    for qb, ob in zip(flat.split(_BLOCK), out.split(_BLOCK), strict=True):
        _check_codes(qb, qp, fn)
        ob.copy_(qb)
        if z:
            ob.sub_(z)
        ob.mul_(s)
    return out.reshape(q.shape)


def dequantize(q: torch.Tensor, qp: QParams) -> torch.Tensor:
    """Map integers back to float32: ``s * (q - z)``."""
    fn = "dequantize"
    if not isinstance(q, torch.Tensor):
        raise TypeError(f"{fn}: expected a torch.Tensor, got {type(q).__name__}")
    if q.is_floating_point() or q.is_complex() or q.dtype == torch.bool:
        raise TypeError(f"{fn}: expected an integer tensor (the output of quantize), got {q.dtype}")
    if not isinstance(qp, QParams):
        raise TypeError(f"{fn}: qp must be a QParams, got {type(qp).__name__}")
    _check_device(qp, q, fn)
    if q.numel() == 0:
        _broadcast(qp, q, fn)
        return torch.empty(q.shape, dtype=torch.float32, device=q.device)
    scale, zp, qv = _broadcast(qp, q, fn)
    if qv.dim() == q.dim() and scale.numel() == 1 and q.device.type == "cpu" and q.numel() > _BLOCK:
        return _dequantize_per_tensor_cpu(q, float(scale), int(zp), qp, fn)
    _check_codes(q, qp, fn)
    return (scale * (qv.to(torch.float32) - zp)).reshape(q.shape)


class _FakeQuantizeSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, zp, qmin, qmax):
        q = torch.round(x * torch.reciprocal(scale)) + zp
        # Straight-through estimator: gradient 1 where the rounded value landed on the grid,
        # 0 where clamping cut it off (the same mask PyTorch's fake-quant kernels save).
        mask = (q >= qmin) & (q <= qmax)
        ctx.save_for_backward(mask)
        return scale * (torch.clamp(q, qmin, qmax) - zp)

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask, None, None, None, None


def fake_quantize(x: torch.Tensor, qp: QParams) -> torch.Tensor:
    """Quantize then dequantize in one differentiable step (straight-through gradient)."""
    fn = "fake_quantize"
    check_float_tensor(x, fn)
    if not isinstance(qp, QParams):
        raise TypeError(f"{fn}: qp must be a QParams, got {type(qp).__name__}")
    _check_device(qp, x, fn)
    if x.numel() == 0:
        _broadcast(qp, x, fn)
        return x.clone()
    scale, zp, xv = _broadcast(qp, x, fn)
    if not bool(torch.isfinite(xv.detach()).all()):
        _raise_nonfinite(x, fn)
    x32 = xv if xv.dtype == torch.float32 else xv.float()
    out = _FakeQuantizeSTE.apply(x32, scale, zp.to(torch.float32), qp.qmin, qp.qmax)
    return out.reshape(x.shape).to(x.dtype)
