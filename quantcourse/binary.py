"""Binary and ternary weights with scaling factors.

Introduced in ``08_binary_and_ternary.ipynb``.

Binary (BinaryConnect / XNOR-Net style)
    ``binarize(w, axis=None)`` returns ``(signs, alpha)``: int8 signs in ``{-1, +1}`` and the
    scale that minimises ``||w - alpha * signs||^2``, ``alpha = mean|w|`` (per tensor, or per
    slice along ``axis``). A weight of exactly 0 (and ``-0.0``) gets the sign ``+1``: a
    binary code has no zero, and either choice costs the same error ``alpha^2``.

Ternary (Ternary Weight Networks)
    ``ternarize(w, axis=None, delta_factor=0.7)`` returns ``(codes, alpha)``: int8 codes in
    ``{-1, 0, +1}``, with ``code = sign(w)`` where ``|w| > delta`` and 0 elsewhere,
    ``delta = delta_factor * mean|w|``, and ``alpha`` the mean of ``|w|`` over the kept weights
    (the L2-optimal scale for those codes). A tensor or slice with no weight above its threshold
    (all zeros, or a ``delta_factor`` of 1 or more on constant magnitudes) gets all-zero codes
    and ``alpha = 0``: it reconstructs to zeros, the best those codes can do.

Both scales are computed in float64 and returned as float32 (0-d per tensor, shape ``(C,)``
per channel). ``alpha = 0`` is the exact optimum of an all-zero slice, unlike the affine
scales, which must stay positive because they are divided by. ``sign_dequantize(codes,
alpha, axis=None)`` rebuilds ``alpha * codes`` in float32 for either kind.

Training
    ``binarize_ste`` / ``ternarize_ste`` are differentiable versions: the forward pass returns
    ``alpha * codes``, the backward pass hands the gradient straight through to ``w``
    (identity; ``alpha`` is treated as a constant), the weight analogue of
    ``fake_quantize``'s straight-through estimator (every weight lands on a level, so nothing
    is masked). ``SignWeight`` wraps them as an ``nn.Module`` for
    ``torch.nn.utils.parametrize``; ``sign_quantized_model`` returns a copy of a model whose
    weight matrices are binarized or ternarized (some layers kept at ``keep_bits``), ready to
    fine-tune: the optimiser updates the float "latent" weights, the forward pass sees codes.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from ._validate import (
    check_bits,
    check_choice,
    check_float_tensor,
    check_optional_axis,
    check_real,
    require_finite,
)

__all__ = [
    "binarize",
    "ternarize",
    "sign_dequantize",
    "binarize_ste",
    "ternarize_ste",
    "SignWeight",
    "sign_quantized_model",
]


# ---------------------------------------------------------------- validation and reductions


_KINDS = ("binary", "ternary")
# How a weight holding NaN or Inf is reported (require_finite's wording).
_FINITE = {"what": "the weights", "advice": "binarize or ternarize only finite weights"}


def _validate(w: object, axis: object, fn: str) -> int | None:
    check_float_tensor(w, fn)
    axis = check_optional_axis(axis, w.ndim, fn)
    require_finite(w.detach(), fn, **_FINITE)
    return axis


def _rows(a: torch.Tensor, axis: int | None) -> torch.Tensor:
    """``a`` as a 2-D ``(slices, elements)`` view: one row per tensor or per channel."""
    if axis is None:
        return a.reshape(1, -1)
    return a.movedim(axis, 0).reshape(a.shape[axis], -1)


def _expand(v: torch.Tensor, like: torch.Tensor, axis: int | None) -> torch.Tensor:
    """A per-slice value broadcast against ``like`` (0-d per tensor, ``(C,)`` along ``axis``)."""
    if axis is None:
        return v.reshape(())
    shape = [1] * like.ndim
    shape[axis] = -1
    return v.reshape(shape)


def _scale_out(v: torch.Tensor, axis: int | None) -> torch.Tensor:
    v = v.to(torch.float32)
    return v.reshape(()) if axis is None else v


# ---------------------------------------------------------------- functional kernels


def binarize(w: torch.Tensor, *, axis: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary codes and their L2-optimal scale: ``(signs, alpha)`` with ``alpha = mean|w|``.

    ``signs`` is int8 in ``{-1, +1}`` with ``w``'s shape (0 maps to ``+1``); ``alpha`` is
    float32, 0-d for ``axis=None``, shape ``(w.shape[axis],)`` per channel.
    ``w ~= sign_dequantize(signs, alpha, axis=axis)``.
    """
    fn = "binarize"
    axis = _validate(w, axis, fn)
    w = w.detach()
    signs = torch.where(w >= 0, 1, -1).to(torch.int8)
    if w.numel() == 0:
        n = 1 if axis is None else w.shape[axis]
        return signs, _scale_out(torch.zeros(n, device=w.device), axis)
    alpha = _rows(w, axis).abs().double().mean(dim=1)
    return signs, _scale_out(alpha, axis)


def ternarize(
    w: torch.Tensor, *, axis: int | None = None, delta_factor: float = 0.7
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ternary codes in ``{-1, 0, +1}`` and their L2-optimal scale: ``(codes, alpha)``.

    Threshold ``delta = delta_factor * mean|w|`` (per tensor or per slice along ``axis``);
    ``code = sign(w)`` where ``|w| > delta``, else 0; ``alpha`` = mean ``|w|`` of the kept
    weights (0 where none is kept). Shapes and dtypes as in ``binarize``.
    """
    fn = "ternarize"
    axis = _validate(w, axis, fn)
    delta_factor = check_real(delta_factor, "delta_factor", fn, lo=0)
    w = w.detach()
    if w.numel() == 0:
        n = 1 if axis is None else w.shape[axis]
        zeros = torch.zeros(n, device=w.device)
        return torch.zeros_like(w, dtype=torch.int8), _scale_out(zeros, axis)
    rows = _rows(w, axis).abs().double()
    delta = delta_factor * rows.mean(dim=1, keepdim=True)
    kept = rows > delta
    n_kept = kept.sum(dim=1)
    total = torch.where(kept, rows, 0.0).sum(dim=1)
    alpha = torch.where(n_kept > 0, total / n_kept.clamp(min=1), 0.0)
    keep = _expand(delta.reshape(-1), w, axis) < w.abs().double()
    codes = (torch.sign(w) * keep).to(torch.int8)
    return codes, _scale_out(alpha, axis)


def sign_dequantize(
    codes: torch.Tensor, alpha: torch.Tensor, *, axis: int | None = None
) -> torch.Tensor:
    """``alpha * codes`` in float32, for binary or ternary codes (scales per tensor or axis)."""
    fn = "sign_dequantize"
    if not isinstance(codes, torch.Tensor) or not isinstance(alpha, torch.Tensor):
        raise TypeError(f"{fn}: codes and alpha must be tensors")
    if codes.is_floating_point() or codes.is_complex():
        raise TypeError(f"{fn}: codes must be an integer tensor, got {codes.dtype}")
    check_float_tensor(alpha, fn)
    axis = check_optional_axis(axis, codes.ndim, fn)
    want = () if axis is None else (codes.shape[axis],)
    if tuple(alpha.shape) != want and not (axis is None and alpha.numel() == 1):
        raise ValueError(f"{fn}: alpha must have shape {want} for axis={axis}, "
                         f"got {tuple(alpha.shape)}")
    if codes.numel():
        lo, hi = (int(v) for v in torch.aminmax(codes.to(torch.int32)))
        if lo < -1 or hi > 1:
            raise ValueError(f"{fn}: codes must lie in {{-1, 0, +1}}, got values in [{lo}, {hi}]")
    if alpha.numel() and (not bool(torch.isfinite(alpha).all()) or float(alpha.min()) < 0):
        raise ValueError(f"{fn}: alpha must be finite and >= 0")
    return _expand(alpha.to(torch.float32), codes, axis) * codes.to(torch.float32)


# ---------------------------------------------------------------- straight-through estimator


class _SignSTE(torch.autograd.Function):
    """Forward: the given reconstruction ``alpha * codes``; backward: identity to ``w``."""

    @staticmethod
    def forward(ctx, w, w_hat):
        return w_hat

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def binarize_ste(w: torch.Tensor, *, axis: int | None = None) -> torch.Tensor:
    """``alpha * sign(w)`` in ``w``'s dtype, with a straight-through (identity) gradient."""
    signs, alpha = binarize(w, axis=axis)
    w_hat = sign_dequantize(signs, alpha, axis=axis).to(w.dtype)
    return _SignSTE.apply(w, w_hat)


def ternarize_ste(
    w: torch.Tensor, *, axis: int | None = None, delta_factor: float = 0.7
) -> torch.Tensor:
    """``alpha * ternary codes`` in ``w``'s dtype, with a straight-through gradient to ``w``."""
    codes, alpha = ternarize(w, axis=axis, delta_factor=delta_factor)
    w_hat = sign_dequantize(codes, alpha, axis=axis).to(w.dtype)
    return _SignSTE.apply(w, w_hat)


# ---------------------------------------------------------------- nn.Module wrappers


class SignWeight(nn.Module):
    """A weight parametrization: ``forward(w)`` is ``w`` binarized or ternarized (STE).

    ``kind`` is ``"binary"`` or ``"ternary"``; ``axis=0`` gives one scale per output channel.
    Register it with ``torch.nn.utils.parametrize.register_parametrization(layer, "weight",
    SignWeight("binary"))``: the layer keeps a float latent weight, which the optimiser
    updates, and computes with its codes.
    """

    def __init__(self, kind: str = "binary", *, axis: int | None = 0, delta_factor: float = 0.7):
        super().__init__()
        self.kind = check_choice(kind, "kind", _KINDS, "SignWeight")
        self.axis = axis
        self.delta_factor = check_real(delta_factor, "delta_factor", "SignWeight", lo=0)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.kind == "binary":
            return binarize_ste(w, axis=self.axis)
        return ternarize_ste(w, axis=self.axis, delta_factor=self.delta_factor)

    def extra_repr(self) -> str:
        extra = f", delta_factor={self.delta_factor}" if self.kind == "ternary" else ""
        return f"{self.kind!r}, axis={self.axis}{extra}"


class _UniformWeight(nn.Module):
    """Symmetric per-channel fake quantization of a weight (straight-through), for kept layers."""

    def __init__(self, bits: int, axis: int | None):
        super().__init__()
        self.bits, self.axis = bits, axis

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        from .affine import fake_quantize, symmetric_qparams

        return fake_quantize(w, symmetric_qparams(w.detach(), self.bits, axis=self.axis))

    def extra_repr(self) -> str:
        return f"bits={self.bits}, axis={self.axis}"


def sign_quantized_model(
    model: nn.Module,
    kind: str = "binary",
    *,
    keep: Sequence[str] = (),
    keep_bits: int | None = 8,
    axis: int | None = 0,
    delta_factor: float = 0.7,
) -> nn.Module:
    """A deep copy of ``model`` whose weight matrices compute with binary or ternary codes.

    Every parameter named ``<module>.weight`` with two or more dimensions gets a ``SignWeight``
    parametrization, except the modules named in ``keep``, which get symmetric per-channel
    ``keep_bits`` fake quantization instead (or stay float32 with ``keep_bits=None``).
    Biases stay float32. The copy is trainable: gradients reach the latent float weights
    through the straight-through estimator. ``model`` itself is not changed.
    """
    fn = "sign_quantized_model"
    if not isinstance(model, nn.Module):
        raise TypeError(f"{fn}: expected an nn.Module, got {type(model).__name__}")
    check_choice(kind, "kind", _KINDS, fn)
    if isinstance(keep, str):
        keep = (keep,)
    if keep_bits is not None:
        check_bits(keep_bits, 2, 16, fn)
    check_real(delta_factor, "delta_factor", fn, lo=0)
    names = {name for name, _ in model.named_modules()}
    unknown = sorted(set(keep) - names)
    if unknown:
        raise ValueError(f"{fn}: no module named {unknown} in the model; modules: "
                         f"{sorted(n for n in names if n)}")
    for name, p in model.named_parameters():
        if name.endswith("weight"):
            require_finite(p.detach(), f"{fn} ({name})", **_FINITE)
    qmodel = copy.deepcopy(model)
    for name, module in list(qmodel.named_modules()):
        w = getattr(module, "weight", None)
        if not isinstance(w, nn.Parameter) or w.ndim < 2:
            continue
        if name in keep:
            if keep_bits is None:
                continue
            param = _UniformWeight(keep_bits, axis)
        else:
            param = SignWeight(kind, axis=axis, delta_factor=delta_factor)
        parametrize.register_parametrization(module, "weight", param)
    return qmodel
