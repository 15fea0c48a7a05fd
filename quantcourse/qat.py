"""Quantization-aware training: fake-quant modules, a learnable scale (LSQ), BatchNorm folding.

Introduced in ``11_quantization_aware_training.ipynb``. The flow follows PyTorch's eager QAT:

1. ``prepare_qat(model, config, fuse={"conv1": "bn1"})`` returns a copy whose quantizable layers
   (per a ``qc.QuantConfig``) are QAT layers: ``QATConv2d`` / ``QATLinear`` fake-quantize their
   weight (and, if the config says so, their input) in every forward, with the
   straight-through estimator, so training sees the rounding error. A convolution named in
   ``fuse`` becomes a ``QATConvBn2d`` that owns its BatchNorm (the BatchNorm's slot becomes
   ``nn.Identity``) and fake-quantizes the weight *scaled by* ``gamma / sqrt(running_var + eps)``,
   the weight that folding will store.
2. Train as usual. ``freeze_observers(model)`` stops the ranges from moving,
   ``freeze_bn_stats(model)`` stops the BatchNorm running statistics.
3. ``convert_qat(model)`` returns a plain float model: every QAT layer becomes an ``nn.Conv2d`` /
   ``nn.Linear`` holding its fake-quantized weight (BatchNorm folded in first); an input
   quantizer stays as a forward pre-hook with frozen ``QParams``.

``FakeQuantize(bits, learnable=True)`` learns its scale as in LSQ (Esser et al., 2020): the
gradient of ``s * clamp(round(x / s), qmin, qmax)`` with respect to ``s`` is ``round(x/s) - x/s``
inside the grid and ``qmin`` or ``qmax`` outside it, scaled by ``g = 1 / sqrt(n * qmax)``
(``n`` elements per scale): ``lsq_fake_quantize`` matches
``torch._fake_quantize_learnable_per_tensor_affine`` / ``..._per_channel_affine`` in value and
gradients. ``fold_bn(conv, bn)`` is the inference-time fold on its own.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import check_bool
from .affine import QParams, fake_quantize, qrange
from .nn import swap_layers
from .observers import MinMaxObserver, MovingAverageMinMaxObserver
from .qconfig import LayerConfig, QuantConfig, QuantSpec

__all__ = [
    "lsq_grad_factor",
    "lsq_fake_quantize",
    "FakeQuantize",
    "QATLinear",
    "QATConv2d",
    "QATConvBn2d",
    "fold_bn",
    "prepare_qat",
    "freeze_observers",
    "freeze_bn_stats",
    "convert_qat",
]

_ROLES = ("weight", "activation")


# ---------------------------------------------------------------- learnable scale (LSQ)


def lsq_grad_factor(n: int, qmax: int) -> float:
    """LSQ's gradient scale ``1 / sqrt(n * qmax)`` for a scale shared by ``n`` elements."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"lsq_grad_factor: n must be a positive int, got {n!r}")
    if not isinstance(qmax, int) or isinstance(qmax, bool) or qmax < 1:
        raise ValueError(f"lsq_grad_factor: qmax must be a positive int, got {qmax!r}")
    return 1.0 / math.sqrt(n * qmax)


class _LSQ(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin, qmax, axis, grad_factor):
        shape = [1] * x.ndim
        if axis is not None:
            shape[axis] = -1
        s = scale.reshape(shape)
        z = torch.clamp(torch.round(zero_point), qmin, qmax).reshape(shape)
        inv = torch.reciprocal(s)
        q = torch.round(x * inv) + z
        qc = torch.clamp(q, qmin, qmax)
        out = (qc - z) * s
        ctx.save_for_backward(x, q, out, s, inv)
        ctx.meta = (qmin, qmax, axis, grad_factor, z)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, q, out, s, inv = ctx.saved_tensors
        qmin, qmax, axis, grad_factor, z = ctx.meta
        below, above = q < qmin, q > qmax
        inside = ~(below | above)
        d_scale = torch.where(below, qmin - z, torch.where(above, qmax - z, (out - x) * inv))
        d_zp = torch.where(inside, torch.zeros_like(x), -s.expand_as(x))
        dims = [d for d in range(x.ndim) if d != axis]
        g_scale = (grad * d_scale).sum(dim=dims) * grad_factor
        g_zp = (grad * d_zp).sum(dim=dims) * grad_factor
        return grad * inside, g_scale, g_zp, None, None, None, None


def lsq_fake_quantize(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    qmin: int,
    qmax: int,
    *,
    axis: int | None = None,
    grad_factor: float = 1.0,
) -> torch.Tensor:
    """Fake-quantize ``x`` with a learnable ``scale`` (0-d, or ``(C,)`` along ``axis``).

    Forward: ``(clamp(round(x / s) + z, qmin, qmax) - z) * s`` with ``z`` the zero point rounded
    and clamped. Backward: ``x`` gets the straight-through gradient (zero where clamped),
    ``scale`` LSQ's ``round(x/s) - x/s`` inside the grid and ``qmin - z`` / ``qmax - z`` outside,
    ``zero_point`` ``-s`` outside the grid; both summed (per channel) and times ``grad_factor``.
    """
    fn = "lsq_fake_quantize"
    for name, t in (("x", x), ("scale", scale), ("zero_point", zero_point)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise TypeError(f"{fn}: {name} must be a float tensor")
    if not isinstance(qmin, int) or not isinstance(qmax, int) or qmin >= qmax:
        raise ValueError(f"{fn}: need integers qmin < qmax, got {qmin!r}, {qmax!r}")
    want = (x.shape[axis],) if axis is not None else ()
    if axis is not None and not -x.ndim <= axis < x.ndim:
        raise ValueError(f"{fn}: axis {axis} is out of range for a {x.ndim}-d input")
    if axis is not None:
        axis %= x.ndim
        want = (x.shape[axis],)
    if scale.numel() != (want[0] if want else 1) or zero_point.shape != scale.shape:
        raise ValueError(f"{fn}: scale and zero_point must hold {want[0] if want else 1} "
                         f"value(s) each, got shapes {tuple(scale.shape)} and "
                         f"{tuple(zero_point.shape)}")
    if not bool((scale.detach() > 0).all()):
        raise ValueError(f"{fn}: scale must be positive")
    return _LSQ.apply(x, scale.reshape(want), zero_point.reshape(want), qmin, qmax, axis,
                      float(grad_factor))


# ---------------------------------------------------------------- the fake-quant module


class FakeQuantize(nn.Module):
    """Fake quantization in a forward pass, with its range observer and an optional LSQ scale.

    ``role="weight"``: the range is the current tensor's (min-max, recomputed every forward
    while the observer is on); symmetric by default, per output channel with ``channels``.
    ``role="activation"``: a moving-average min-max range (``averaging_constant``), updated in
    training mode only (and on the first batch), per tensor. ``learnable=True``: the observer
    sets the first scale, then the scale is an ``nn.Parameter`` with LSQ's gradient (the
    observer is switched off after that first batch). ``observer_enabled = False`` freezes the
    range; ``fake_quant_enabled = False`` passes the input through unchanged.
    """

    def __init__(
        self,
        bits: int = 8,
        *,
        role: str = "weight",
        symmetric: bool = True,
        channels: int | None = None,
        learnable: bool = False,
        averaging_constant: float = 0.01,
    ) -> None:
        super().__init__()
        name = "FakeQuantize"
        if role not in _ROLES:
            raise ValueError(f"{name}: role must be one of {_ROLES}, got {role!r}")
        check_bool(symmetric, "symmetric", name)
        check_bool(learnable, "learnable", name)
        if channels is not None and (not isinstance(channels, int) or channels < 1):
            raise ValueError(f"{name}: channels must be a positive int or None, got {channels!r}")
        if channels is not None and role == "activation":
            raise ValueError(f"{name}: activations are quantized per tensor here (channels=None)")
        axis = None if channels is None else 0
        if role == "weight":
            self._observer = MinMaxObserver(bits, symmetric=symmetric, axis=axis)
        else:
            self._observer = MovingAverageMinMaxObserver(
                bits, symmetric=symmetric, averaging_constant=averaging_constant)
        self.qmin, self.qmax = (qrange(bits, signed=True, narrow_range=True) if symmetric
                                else qrange(bits, signed=False))
        self.bits, self.role, self.symmetric, self.axis = bits, role, symmetric, axis
        self.learnable = learnable
        shape = () if channels is None else (channels,)
        scale = torch.ones(shape)
        if learnable:
            self.scale = nn.Parameter(scale)
        else:
            self.register_buffer("scale", scale)
        self.register_buffer("zero_point", torch.zeros(shape))
        self.register_buffer("initialized", torch.tensor(False))
        self.observer_enabled = True
        self.fake_quant_enabled = True

    def extra_repr(self) -> str:
        return (f"bits={self.bits}, role={self.role!r}, symmetric={self.symmetric}, "
                f"granularity={'tensor' if self.axis is None else 'channel'}, "
                f"learnable={self.learnable}, observer_enabled={self.observer_enabled}")

    def _observe(self, x: torch.Tensor) -> None:
        if self.role == "weight":
            self._observer.reset()
        self._observer.observe(x.detach())
        qp = self._observer.qparams()
        with torch.no_grad():
            self.scale.copy_(qp.scale.reshape(self.scale.shape))
            self.zero_point.copy_(qp.zero_point.reshape(self.zero_point.shape).float())
            self.initialized.fill_(True)
        if self.learnable:
            self.observer_enabled = False  # from here on the optimizer moves the scale

    def qparams(self) -> QParams:
        """The current grid as ``QParams`` (after at least one forward)."""
        if not bool(self.initialized):
            raise RuntimeError("FakeQuantize: no range yet; run a forward pass first")
        s = self.scale.detach().clamp(min=torch.finfo(torch.float32).eps)
        return QParams(s.clone(), self.zero_point.round().to(torch.int32), self.qmin, self.qmax,
                       self.axis)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        observe = self.observer_enabled and (
            self.role == "weight" or self.training or not bool(self.initialized))
        if observe or not bool(self.initialized):
            self._observe(x)
        if not self.fake_quant_enabled:
            return x
        if self.learnable:
            n = x.numel() // self.scale.numel() if self.role == "weight" else x[0].numel()
            scale = self.scale.clamp(min=torch.finfo(torch.float32).eps)
            return lsq_fake_quantize(x, scale, self.zero_point, self.qmin, self.qmax,
                                     axis=self.axis,
                                     grad_factor=lsq_grad_factor(max(n, 1), self.qmax))
        return fake_quantize(x, self.qparams())


def _fake_quants(spec_w: QuantSpec | None, spec_a: QuantSpec | None, channels: int,
                 learnable: bool) -> tuple[FakeQuantize | None, FakeQuantize | None]:
    wq = None if spec_w is None else FakeQuantize(
        spec_w.bits, role="weight", symmetric=spec_w.symmetric,
        channels=channels if spec_w.granularity == "channel" else None, learnable=learnable)
    aq = None if spec_a is None else FakeQuantize(
        spec_a.bits, role="activation", symmetric=spec_a.symmetric, learnable=learnable)
    return wq, aq


class _QATLayer:
    """What the QAT layers share: fake-quantizers attached from a ``LayerConfig``, the
    fake-quantized weight, and the plain float layer with that weight baked in."""

    weight_quant: FakeQuantize | None
    input_quant: FakeQuantize | None

    def _attach(self, layer: nn.Module, config: LayerConfig, learnable: bool):
        self.load_state_dict(layer.state_dict())
        self.weight_quant, self.input_quant = _fake_quants(
            config.weight, config.activation, layer.weight.shape[0], learnable)
        self.train(layer.training)
        return self

    def quantized_weight(self) -> torch.Tensor:
        return self.weight if self.weight_quant is None else self.weight_quant(self.weight)

    def _quantized_input(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.input_quant is None else self.input_quant(x)

    def _bake(self, out: nn.Module) -> nn.Module:
        with torch.no_grad():
            out.weight.copy_(self.quantized_weight())
            if self.bias is not None:
                out.bias.copy_(self.bias)
        return out


class QATLinear(_QATLayer, nn.Linear):
    """``nn.Linear`` that fake-quantizes its weight (``weight_quant``) and, optionally, its
    input (``input_quant``) in every forward. Build it with ``QATLinear.from_float``."""

    @classmethod
    def from_float(cls, layer: nn.Linear, config: LayerConfig, *, learnable: bool = False):
        new = cls(layer.in_features, layer.out_features, bias=layer.bias is not None,
                  device=layer.weight.device, dtype=layer.weight.dtype)
        return new._attach(layer, config, learnable)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self._quantized_input(x), self.quantized_weight(), self.bias)

    def to_float(self) -> nn.Linear:
        return self._bake(nn.Linear(self.in_features, self.out_features,
                                    bias=self.bias is not None))


def _conv_like(conv: nn.Conv2d, cls: type, bias: bool):
    return cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
               padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=bias,
               padding_mode=conv.padding_mode, device=conv.weight.device,
               dtype=conv.weight.dtype)


class QATConv2d(_QATLayer, nn.Conv2d):
    """``nn.Conv2d`` with fake-quantized weight (and optionally input): see ``QATLinear``."""

    @classmethod
    def from_float(cls, conv: nn.Conv2d, config: LayerConfig, *, learnable: bool = False):
        return _conv_like(conv, cls, conv.bias is not None)._attach(conv, config, learnable)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self._quantized_input(x), self.quantized_weight(), self.bias)

    def to_float(self) -> nn.Conv2d:
        return self._bake(_conv_like(self, nn.Conv2d, self.bias is not None))


# ---------------------------------------------------------------- BatchNorm folding


def _bn_factor(bn: nn.BatchNorm2d) -> torch.Tensor:
    gamma = bn.weight if bn.affine else torch.ones_like(bn.running_var)
    return gamma / torch.sqrt(bn.running_var + bn.eps)


def _check_pair(conv: nn.Module, bn: nn.Module, fn: str, names: str = "") -> None:
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"{fn}: {names}expected an nn.Conv2d, got {type(conv).__name__}")
    if not isinstance(bn, nn.BatchNorm2d):
        raise TypeError(f"{fn}: {names}expected an nn.BatchNorm2d, got {type(bn).__name__}")
    if bn.num_features != conv.out_channels:
        raise ValueError(f"{fn}: {names}the BatchNorm has {bn.num_features} channels, the "
                         f"convolution {conv.out_channels} outputs")
    if bn.running_var is None:
        raise ValueError(f"{fn}: {names}the BatchNorm tracks no running statistics")


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new ``nn.Conv2d`` equal to ``bn(conv(x))`` with ``bn`` in eval mode (running stats):
    ``W' = W * gamma / sqrt(var + eps)`` per output channel, ``b' = (b - mean) * gamma /
    sqrt(var + eps) + beta``. Neither module is modified."""
    _check_pair(conv, bn, "fold_bn")
    out = _conv_like(conv, nn.Conv2d, True)
    with torch.no_grad():
        factor = _bn_factor(bn)
        out.weight.copy_(conv.weight * factor.reshape(-1, 1, 1, 1))
        b = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        beta = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
        out.bias.copy_((b - bn.running_mean) * factor + beta)
    return out.train(conv.training)


class QATConvBn2d(nn.Conv2d):
    """A convolution and its BatchNorm trained as one, as PyTorch's QAT ``ConvBn2d`` does.

    Forward: the weight scaled by ``f = gamma / sqrt(running_var + eps)`` is fake-quantized (the
    weight the folded model stores), convolved, divided by ``f`` and handed to the BatchNorm,
    which in training uses the batch statistics (and updates its running ones). In eval mode
    the result equals ``fold_bn``'s folded convolution with that quantized weight.
    ``freeze_bn_stats()`` keeps the BatchNorm in eval mode from then on.
    """

    weight_quant: FakeQuantize | None
    input_quant: FakeQuantize | None

    @classmethod
    def from_float(cls, conv: nn.Conv2d, bn: nn.BatchNorm2d, config: LayerConfig, *,
                   learnable: bool = False):
        _check_pair(conv, bn, "QATConvBn2d.from_float")
        new = _conv_like(conv, cls, conv.bias is not None)
        new.load_state_dict(conv.state_dict())
        new.bn = copy.deepcopy(bn)
        new.weight_quant, new.input_quant = _fake_quants(
            config.weight, config.activation, conv.out_channels, learnable)
        new.bn_frozen = False
        new.train(conv.training)
        return new

    def train(self, mode: bool = True):
        super().train(mode)
        if getattr(self, "bn_frozen", False):
            self.bn.eval()
        return self

    def freeze_bn_stats(self) -> None:
        self.bn_frozen = True
        self.bn.eval()

    def quantized_weight(self) -> torch.Tensor:
        """The fake-quantized folded weight ``W * gamma / sqrt(running_var + eps)``."""
        w = self.weight * _bn_factor(self.bn).reshape(-1, 1, 1, 1)
        return w if self.weight_quant is None else self.weight_quant(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_quant is not None:
            x = self.input_quant(x)
        factor = _bn_factor(self.bn).reshape(1, -1, 1, 1)
        y = self._conv_forward(x, self.quantized_weight(), None) / factor
        if self.bias is not None:
            y = y + self.bias.reshape(1, -1, 1, 1)
        return self.bn(y)

    def to_float(self) -> nn.Conv2d:
        """The folded convolution with the quantized weight (BatchNorm's running stats)."""
        folded = fold_bn(self, self.bn)
        with torch.no_grad():
            folded.weight.copy_(self.quantized_weight())
        return folded.train(False)


_QAT_TYPES = (QATLinear, QATConv2d, QATConvBn2d)


# ---------------------------------------------------------------- the flow


def _check_spec(spec: QuantSpec | None, part: str, name: str, fn: str) -> None:
    if spec is None:
        return
    if spec.is_float:
        raise ValueError(f"{fn}: layer {name!r}: QAT fake-quantizes to an integer grid; "
                         f"{part} bits {spec.bits!r} is a float format (use an int from 2 to 16)")
    allowed = ("tensor", "channel") if part == "weight" else ("tensor",)
    if spec.granularity not in allowed:
        raise ValueError(f"{fn}: layer {name!r}: QAT supports {part} granularity "
                         f"{' or '.join(map(repr, allowed))}, got {spec.granularity!r}")


def prepare_qat(
    model: nn.Module,
    config: QuantConfig,
    *,
    fuse: Mapping[str, str] | None = None,
    learnable: bool = False,
    inplace: bool = False,
) -> nn.Module:
    """A copy of ``model`` (itself with ``inplace=True``) ready for quantization-aware training.

    Every layer that ``config.resolve(model)`` names becomes a ``QATConv2d`` / ``QATLinear``
    (weights per the config's weight spec: integer bits, per tensor or per channel; inputs per
    its activation spec, per tensor, or float if None). ``fuse`` maps a convolution's name to
    the name of the BatchNorm2d that follows it: the pair becomes one ``QATConvBn2d`` and the
    BatchNorm's slot an ``nn.Identity``. ``learnable=True`` gives every quantizer an LSQ scale.
    Every check runs before the model is touched. The training flag is kept: call
    ``.train()`` before fine-tuning.
    """
    fn = "prepare_qat"
    if not isinstance(model, nn.Module):
        raise TypeError(f"{fn}: expected an nn.Module, got {type(model).__name__}")
    if not isinstance(config, QuantConfig):
        raise TypeError(f"{fn}: config must be a qc.QuantConfig, got {type(config).__name__}")
    check_bool(learnable, "learnable", fn)
    check_bool(inplace, "inplace", fn)
    done = [n for n, m in model.named_modules() if isinstance(m, (*_QAT_TYPES, FakeQuantize))]
    if done:
        raise ValueError(f"{fn}: the model is already prepared for QAT ({done[0]!r} is a "
                         f"{type(model.get_submodule(done[0])).__name__})")
    layer_cfgs = config.resolve(model)
    for name, cfg in layer_cfgs.items():
        _check_spec(cfg.weight, "weight", name, fn)
        _check_spec(cfg.activation, "activation", name, fn)
    fuse = dict(fuse or {})
    modules = dict(model.named_modules())
    if len(set(fuse.values())) != len(fuse):
        raise ValueError(f"{fn}: fuse names one BatchNorm for two convolutions")
    for conv_name, bn_name in fuse.items():
        if conv_name not in layer_cfgs:
            raise ValueError(f"{fn}: fuse names {conv_name!r}, which is not a layer the config "
                             f"quantizes; those are: {', '.join(layer_cfgs)}")
        if bn_name not in modules or bn_name == "":
            raise ValueError(f"{fn}: fuse names {bn_name!r}, which is not a module of the model")
        _check_pair(modules[conv_name], modules[bn_name], fn, f"{conv_name!r} + {bn_name!r}: ")

    target = model if inplace else copy.deepcopy(model)
    mods = dict(target.named_modules())

    def make(name: str, layer: nn.Module) -> nn.Module:
        cfg = layer_cfgs[name]
        if name in fuse:
            return QATConvBn2d.from_float(layer, mods[fuse[name]], cfg, learnable=learnable)
        cls = QATConv2d if isinstance(layer, nn.Conv2d) else QATLinear
        return cls.from_float(layer, cfg, learnable=learnable)

    swap_layers(target, make, list(layer_cfgs), inplace=True)
    for bn_name in fuse.values():
        parent_name, _, child = bn_name.rpartition(".")
        setattr(target.get_submodule(parent_name) if parent_name else target, child,
                nn.Identity())
    return target


def _check_prepared(model: nn.Module, fn: str) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{fn}: expected an nn.Module, got {type(model).__name__}")
    if not any(isinstance(m, _QAT_TYPES) for m in model.modules()):
        raise ValueError(f"{fn}: the model has no QAT layers; prepare it with qc.prepare_qat")


def freeze_observers(model: nn.Module) -> int:
    """Stop every ``FakeQuantize`` in ``model`` from updating its range; returns how many."""
    _check_prepared(model, "freeze_observers")
    fqs = [m for m in model.modules() if isinstance(m, FakeQuantize)]
    for m in fqs:
        if m.role == "activation" and not bool(m.initialized):
            raise RuntimeError("freeze_observers: a quantizer has no range yet; run at least "
                               "one batch through the model first")
    for m in fqs:
        m.observer_enabled = False
    return len(fqs)


def freeze_bn_stats(model: nn.Module) -> int:
    """Keep every ``QATConvBn2d``'s BatchNorm on its running statistics; returns how many."""
    _check_prepared(model, "freeze_bn_stats")
    layers = [m for m in model.modules() if isinstance(m, QATConvBn2d)]
    for m in layers:
        m.freeze_bn_stats()
    return len(layers)


def convert_qat(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """A plain float model (in eval mode) with every QAT layer's quantized weight baked in.

    ``QATConvBn2d`` becomes its folded ``nn.Conv2d``; an input quantizer becomes a forward
    pre-hook that fake-quantizes with its frozen ``QParams``. Input quantizers need a range:
    run at least one batch through the prepared model first (weights have theirs).
    """
    fn = "convert_qat"
    check_bool(inplace, "inplace", fn)
    _check_prepared(model, fn)
    missing = [n for n, m in model.named_modules() if isinstance(m, FakeQuantize)
               and m.role == "activation" and not bool(m.initialized)]
    if missing:
        raise RuntimeError(f"{fn}: {missing[0]!r} has no range yet; run at least one batch "
                           "through the model first")
    target = model if inplace else copy.deepcopy(model)
    target.eval()
    names = [n for n, m in target.named_modules() if isinstance(m, _QAT_TYPES)]
    for name in names:
        layer = target.get_submodule(name)
        plain = layer.to_float().eval()
        if layer.input_quant is not None:
            qp = layer.input_quant.qparams()
            plain.register_forward_pre_hook(
                lambda _m, args, qp=qp: (fake_quantize(args[0], qp), *args[1:]))
        parent_name, _, child = name.rpartition(".")
        setattr(target.get_submodule(parent_name) if parent_name else target, child, plain)
    return target

