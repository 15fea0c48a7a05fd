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

from dataclasses import dataclass

import torch

from . import _affine_fast as _fast
from ._validate import (
    check_axis,
    check_bits,
    check_choice,
    check_float_tensor,
    check_int,
    raise_nonfinite,
)

__all__ = [
    "QParams",
    "symmetric_qparams",
    "asymmetric_qparams",
    "qrange",
    "quantize",
    "dequantize",
    "fake_quantize",
    "value_range",
]

_EPS = torch.finfo(torch.float32).eps
# Elements per block of the CPU per-tensor fast path (``_affine_fast``).
_BLOCK = _fast.BLOCK


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
        if self.group_size is not None:
            _check_size(self.group_size, "group_size", "QParams")
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


def _check_size(value: object, name: str, fn: str) -> int:
    """A positive int size such as ``group_size`` (``ValueError`` for anything else, as a bad
    size always raised here); returns it."""
    try:
        return check_int(value, name, fn)
    except TypeError as err:
        raise ValueError(str(err)) from None


def _check_group(x: torch.Tensor, group_size: int, fn: str) -> None:
    _check_size(group_size, "group_size", fn)
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
        raise_nonfinite(x, fn)
    return mn.float(), mx.float(), axis


def value_range(
    x: torch.Tensor, *, axis: int | None = None, group_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum and maximum of ``x`` (float32): one pair per tensor, per slice along ``axis``
    or per group of ``group_size`` along the last dimension. Raises for NaN or Inf."""
    check_float_tensor(x, "value_range")
    mn, mx, _ = _minmax(x, axis, group_size, "value_range")
    return mn, mx


# The shared NaN/Inf error, under the name other modules import from here.
_raise_nonfinite = raise_nonfinite


# ---------------------------------------------------------------- parameters from a range
# The cores take a range already checked (finite min and max per tensor, channel or group);
# the public functions below check their input, measure the range and call them.


def _qparams_symmetric(mn: torch.Tensor, mx: torch.Tensor, bits: int, *,
                       narrow_range: bool = True, axis: int | None = None,
                       group_size: int | None = None) -> QParams:
    """``z = 0``, ``s = max|x| / qmax`` (narrow) or ``max|x| / ((qmax - qmin) / 2)``."""
    qmin, qmax = qrange(bits, signed=True, narrow_range=narrow_range)
    amax = torch.maximum(-mn, mx)
    denom = qmax if narrow_range else (qmax - qmin) / 2
    scale = torch.clamp(amax / denom, min=_EPS)
    zp = torch.zeros(scale.shape, dtype=torch.int32, device=scale.device)
    return QParams(scale, zp, qmin, qmax, axis, group_size)


def _qparams_asymmetric(mn: torch.Tensor, mx: torch.Tensor, bits: int, *,
                        signed: bool = False, axis: int | None = None,
                        group_size: int | None = None) -> QParams:
    """``s = (max - min) / (qmax - qmin)``, ``z = clamp(qmin - round(min / s))``."""
    qmin, qmax = qrange(bits, signed=signed)
    # Widening the range to include 0 keeps real zero exactly representable (padding, ReLU
    # zeros) and keeps the zero point inside [qmin, qmax].
    mn = torch.clamp(mn, max=0.0)
    mx = torch.clamp(mx, min=0.0)
    scale = torch.clamp((mx - mn) / float(qmax - qmin), min=_EPS)
    zp = qmin - torch.round(mn / scale)
    zp = torch.clamp(zp, qmin, qmax).to(torch.int32)
    return QParams(scale, zp, qmin, qmax, axis, group_size)


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
    return _qparams_symmetric(mn, mx, bits, narrow_range=narrow_range, axis=axis,
                              group_size=group_size)


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
    return _qparams_asymmetric(mn, mx, bits, signed=signed, axis=axis, group_size=group_size)


# ---------------------------------------------------------------- quantize / dequantize


def _shaped(qp: QParams, x: torch.Tensor):
    """Scale and zero point shaped to broadcast against ``x`` (grouped: ``x`` is reshaped).

    Unchecked: ``_check_shapes`` has proved that ``qp`` fits ``x``.
    """
    if qp.axis is not None:
        shape = [1] * x.ndim
        shape[qp.axis % x.ndim] = -1
        return qp.scale.reshape(shape), qp.zero_point.reshape(shape), x
    if qp.group_size is not None:
        gshape = (*x.shape[:-1], x.shape[-1] // qp.group_size)
        xg = x.reshape(*gshape, qp.group_size)
        return qp.scale.unsqueeze(-1), qp.zero_point.reshape(gshape).unsqueeze(-1), xg
    return qp.scale.reshape(()), qp.zero_point.reshape(()), x


def _check_shapes(qp: QParams, x: torch.Tensor, fn: str) -> None:
    """Raise unless ``qp``'s scales fit ``x``'s shape (one per channel, group or tensor)."""
    if qp.axis is not None:
        if x.ndim == 0:
            raise ValueError(f"{fn}: per-channel QParams need a tensor with dimensions")
        axis = check_axis(qp.axis, x.ndim, fn)
        if qp.scale.numel() != x.shape[axis]:
            raise ValueError(
                f"{fn}: QParams hold {qp.scale.numel()} scales but axis {axis} of the input "
                f"has {x.shape[axis]} channels"
            )
    elif qp.group_size is not None:
        _check_group(x, qp.group_size, fn)
        gshape = (*x.shape[:-1], x.shape[-1] // qp.group_size)
        if tuple(qp.scale.shape) != gshape:
            raise ValueError(
                f"{fn}: QParams scale shape {tuple(qp.scale.shape)} does not match the "
                f"{gshape} groups of the input"
            )
    elif qp.scale.numel() != 1:
        raise ValueError(f"{fn}: per-tensor QParams must hold one scale, got {qp.scale.numel()}")


def _check_qparams(qp: object, x: torch.Tensor | None, fn: str) -> None:
    """Raise unless ``qp`` is a ``QParams`` on ``x``'s device whose scales fit ``x``
    (``x=None``: only the type)."""
    if not isinstance(qp, QParams):
        raise TypeError(f"{fn}: qp must be a QParams, got {type(qp).__name__}")
    if x is None:
        return
    if qp.scale.device != x.device:
        raise ValueError(
            f"{fn}: QParams live on {qp.scale.device} but the input is on {x.device}; "
            "use qp.to(x.device)"
        )
    _check_shapes(qp, x, fn)


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


def _quantize(x: torch.Tensor, qp: QParams, *, zero_point: bool = True,
              generator: torch.Generator | None = None, stochastic: bool = False):
    """``clamp(round_half_even(x * (1/s)) + z, qmin, qmax)``, unchecked.

    ``x`` is a finite float tensor that ``qp`` fits (same device). ``zero_point=False`` skips
    adding ``z`` for callers that know it is 0 (symmetric grids); ``stochastic`` rounds
    down or up at random instead of to nearest.
    """
    scale, zp, xv = _shaped(qp, x)
    t = xv.float() * torch.reciprocal(scale)
    t = _stochastic_round(t, generator) if stochastic else t.round_()
    if zero_point:
        t.add_(zp)
    return t.clamp_(qp.qmin, qp.qmax).to(qp.dtype).reshape(x.shape)


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
    ``generator``, introduced in ``17_stochastic_rounding.ipynb``). The default is unchanged.
    """
    fn = "quantize"
    check_float_tensor(x, fn)
    _check_qparams(qp, None, fn)
    check_choice(rounding, "rounding", ("nearest", "stochastic"), fn)
    if rounding == "nearest" and generator is not None:
        raise ValueError(f"{fn}: a generator only makes sense with rounding='stochastic'")
    _check_generator(generator, x.device, fn)
    _check_qparams(qp, x, fn)
    if x.numel() == 0:
        return torch.empty(x.shape, dtype=qp.dtype, device=x.device)
    x32 = x.float()
    stochastic = rounding == "stochastic"
    if not stochastic and _fast.applies(x32, qp.granularity == "tensor"):
        # The same formula block by block (finiteness checked on the way): _affine_fast.
        inv = float(torch.reciprocal(qp.scale.reshape(())))
        return _fast.quantize_per_tensor_cpu(x32.contiguous(), inv, int(qp.zero_point),
                                             qp.qmin, qp.qmax, qp.dtype, fn)
    if not bool(torch.isfinite(x32).all()):
        raise_nonfinite(x, fn)
    return _quantize(x32, qp, generator=generator, stochastic=stochastic)


def _check_codes(q: torch.Tensor, qp: QParams, fn: str) -> None:
    lo, hi = torch.aminmax(q)
    if int(lo) < qp.qmin or int(hi) > qp.qmax:
        raise ValueError(
            f"{fn}: integers span [{int(lo)}, {int(hi)}], outside the grid "
            f"[{qp.qmin}, {qp.qmax}] of these QParams"
        )


def _dequantize(q: torch.Tensor, qp: QParams, *, zero_point: bool = True) -> torch.Tensor:
    """``s * (q - z)`` in float32, unchecked: ``q`` holds codes in ``qp``'s grid and fits it.

    ``zero_point=False`` skips subtracting ``z`` for callers that know it is 0: two passes
    (convert, scale in place) instead of three, the same float32 products bit for bit.
    """
    scale, zp, qv = _shaped(qp, q)
    w = qv.to(torch.float32)
    if zero_point:
        w.sub_(zp)
    return w.mul_(scale).reshape(q.shape)


def dequantize(q: torch.Tensor, qp: QParams) -> torch.Tensor:
    """Map integers back to float32: ``s * (q - z)``."""
    fn = "dequantize"
    if not isinstance(q, torch.Tensor):
        raise TypeError(f"{fn}: expected a torch.Tensor, got {type(q).__name__}")
    if q.is_floating_point() or q.is_complex() or q.dtype == torch.bool:
        raise TypeError(f"{fn}: expected an integer tensor (the output of quantize), got {q.dtype}")
    _check_qparams(qp, q, fn)
    if q.numel() == 0:
        return torch.empty(q.shape, dtype=torch.float32, device=q.device)
    if _fast.applies(q, qp.granularity == "tensor"):
        # The same formula block by block, the codes checked on the way: _affine_fast.
        return _fast.dequantize_per_tensor_cpu(q, float(qp.scale), int(qp.zero_point),
                                               lambda block: _check_codes(block, qp, fn))
    _check_codes(q, qp, fn)
    return _dequantize(q, qp)


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
    _check_qparams(qp, x, fn)
    if x.numel() == 0:
        return x.clone()
    scale, zp, xv = _shaped(qp, x)
    if not bool(torch.isfinite(xv.detach()).all()):
        raise_nonfinite(x, fn)
    x32 = xv if xv.dtype == torch.float32 else xv.float()
    out = _FakeQuantizeSTE.apply(x32, scale, zp.to(torch.float32), qp.qmin, qp.qmax)
    return out.reshape(x.shape).to(x.dtype)
