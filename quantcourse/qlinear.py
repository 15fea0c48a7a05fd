"""Quantized linear layers (W8A8, fbgemm dynamic, W8A16, W4A16) and their safetensors files.

Introduced in ``14_int8_kernels_and_hardware.ipynb``.

The functional kernels they run (``quantize_per_token``, ``w8a8_linear``,
``weight_only_linear``) are in ``linear_kernels``.

Module wrappers (``nn.Module``; inference only, all state in buffers), each built from a
float ``nn.Linear`` with ``from_float(linear)``; ``QUANTIZED_LINEARS`` lists them by name and
``quantized_linear_types(device)`` those that run on a device:

* ``W8A8Linear``: int8 weights per output channel, activations per token (dynamic) on an 8-bit
  grid, or 7-bit where the machine's fastest exact path needs it (``act_bits``, ``path``).
* ``FbgemmDynamicLinear``: the same int8 weights run through PyTorch's prepacked fbgemm
  dynamic int8 linear (``engines``), the fast CPU path. fbgemm quantizes the activations per
  tensor, asymmetric, unsigned and by default 7-bit (``reduce_range``): expect outputs about
  1-3% (relative) away from ``W8A8Linear``'s, not bit-identical.
* ``W8A16Linear``: int8 weights (per output channel, or per group), float activations.
* ``W4A16Linear``: 4-bit weights per group of ``group_size`` inputs (default 128), two codes
  per byte via ``pack_bits``.

The weight-only layers run fbgemm's fp16-weight GEMM on their integer codes where the CPU has
it (``path == "fbgemm"``): the codes are exact in float16, packed once (2 bytes per weight, held
beside the stored codes), and the scales multiply the float32 sums, one GEMM per group. At
batch 1 on a 4096x4096 layer that reads half of float32's bytes: measured 2.1x (W8A16) and
1.2x (W4A16, 32 groups) the speed of ``nn.Linear`` on one thread of a Zen 4 EPYC, where
dequantize-then-matmul ran at 0.10x and 0.03x. Elsewhere, or with ``method="dequantize"``,
they dequantize the codes on the fly and call a float matmul.

Weights are quantized with ``symmetric_qparams`` on each class's grid (``qmin``, ``qmax``:
narrow range, int8 ``[-127, 127]``, int4 ``[-7, 7]``), so every layer agrees with its
fake-quantized float simulation (``fake_quantize`` on the weights, and per token on the
activations for W8A8) to float rounding; on the ``"dequantize"`` path the weight-only layers
agree bit for bit.

``save_quantized(module, path)`` / ``load_quantized(path)`` store a layer as safetensors
(integer codes, float32 scales and bias; the class name and a JSON config of its shape and
options in the metadata; no pickle); a round trip is bit-exact.

Example::

    >>> q = W8A8Linear.from_float(torch.nn.Linear(256, 64))
    >>> q(torch.randn(4, 256)).shape
    torch.Size([4, 64])
"""

from __future__ import annotations

import json
import os

import torch
from torch import nn

from . import _int8_engines as _fb
from ._validate import check_bits_in, check_bool, check_choice, check_float_tensor
from .affine import QParams, _check_size, qrange, quantize, symmetric_qparams
from .engines import fbgemm_available, fbgemm_linear_dynamic, fbgemm_prepack
from .kernels import METHODS, int8_activation_bits, int8_matmul_path
from .linear_kernels import (
    _check_bias,
    _check_input,
    _check_weight,
    _w8a8_fbgemm,
    _weight_only_fbgemm,
    w8a8_linear,
    weight_only_linear,
)
from .packing import pack_bits, packed_nbytes, unpack_bits

__all__ = [
    "W8A8Linear",
    "FbgemmDynamicLinear",
    "W8A16Linear",
    "W4A16Linear",
    "QUANTIZED_LINEARS",
    "quantized_linear_types",
    "save_quantized",
    "load_quantized",
]

_FORMAT = "quantcourse.qlinear/2"


# ---------------------------------------------------------------- input checks


def _check_linear(linear: object, fn: str) -> None:
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"{fn}: expected a torch.nn.Linear, got {type(linear).__name__}")
    check_float_tensor(linear.weight, fn)


def _check_codes_in(q: torch.Tensor, lo: int, hi: int, fn: str) -> None:
    if q.numel():
        qmin, qmax = (int(v) for v in torch.aminmax(q))
        if qmin < lo or qmax > hi:
            raise ValueError(
                f"{fn}: weight codes span [{qmin}, {qmax}], outside the symmetric grid "
                f"[{lo}, {hi}]"
            )


def _check_group_size(group_size: object, in_features: int, fn: str) -> int:
    _check_size(group_size, "group_size", fn)
    if in_features % group_size:
        raise ValueError(
            f"{fn}: group_size {group_size} must divide in_features ({in_features}); "
            f"choose a divisor of {in_features}"
        )
    return group_size


# ---------------------------------------------------------------- nn.Module wrappers


class _QuantLinear(nn.Module):
    """Shared buffers, checks, save/load hooks: codes, ``weight_scale`` (float32), optional
    ``bias`` (float32). Subclasses set the grid (``bits``, ``qmin``, ``qmax``), the name of
    their codes buffer and a one-line ``description``."""

    bits = 8
    qmin, qmax = qrange(bits, signed=True, narrow_range=True)
    codes = "weight_q"
    description = ""
    cpu_only = False
    group_size: int | None = None
    in_features: int
    out_features: int

    @classmethod
    def available(cls, device: str | torch.device = "cpu") -> bool:
        """Whether this layer runs on ``device`` here."""
        return not cls.cpu_only or torch.device(device).type == "cpu"

    @classmethod
    def _quantized_weight(cls, linear: nn.Linear, fn: str, *, group_size: int | None = None,
                          cpu: bool = False):
        """``linear``'s weight as codes on the class's grid (per output channel, or per
        group), the scales and a float32 copy of the bias."""
        _check_linear(linear, fn)
        if group_size is not None:
            _check_group_size(group_size, linear.in_features, fn)
        w = linear.weight.detach().float()
        b = None if linear.bias is None else linear.bias.detach().float().clone()
        if cpu:
            w, b = w.cpu(), None if b is None else b.cpu()
        qp = symmetric_qparams(w, cls.bits, axis=None if group_size else 0,
                               group_size=group_size)
        return quantize(w, qp), qp.scale, b

    def _init_common(self, weight_scale: torch.Tensor, bias: torch.Tensor | None,
                     device: torch.device, fn: str) -> None:
        expect = ((self.out_features,) if self.group_size is None
                  else (self.out_features, self.in_features // self.group_size))
        if tuple(weight_scale.shape) != expect:
            raise ValueError(
                f"{fn}: weight_scale must have shape {expect}, got {tuple(weight_scale.shape)}"
            )
        check_float_tensor(weight_scale, fn)
        if weight_scale.device != device:
            raise ValueError(f"{fn}: weight_scale is on {weight_scale.device}, codes on {device}")
        _check_bias(bias, self.out_features, device, fn)
        self.register_buffer("weight_scale", weight_scale.detach().to(torch.float32).clone())
        self.register_buffer(
            "bias", None if bias is None else bias.detach().to(torch.float32).clone()
        )

    def _init_int8(self, weight_q: torch.Tensor, weight_scale: torch.Tensor,
                   bias: torch.Tensor | None, fn: str, group_size: int | None = None) -> None:
        """Int8 codes ``(out, in)`` in ``[qmin, qmax]``, one scale per output channel or group."""
        _check_weight(weight_q, fn)
        self.out_features, self.in_features = weight_q.shape
        if group_size is not None:
            _check_group_size(group_size, self.in_features, fn)
        self.group_size = group_size
        _check_codes_in(weight_q, self.qmin, self.qmax, fn)
        self.register_buffer("weight_q", weight_q.detach().clone())
        self._init_common(weight_scale, bias, weight_q.device, fn)
        self.weight_qparams()        # a QParams round through its checks: scales positive

    def _pack_of_codes(self, build) -> object:
        """``build()``'s pack of the stored codes, built once and kept while the codes buffer
        is this very tensor (held, so its memory cannot be reused) at this version (bumped by
        any in-place edit; inference tensors have none). ``load_state_dict`` drops it."""
        src = getattr(self, self.codes)
        version = None if src.is_inference() else src._version
        entry = self.__dict__.get("_pack_entry")
        if entry is None or entry[0] is not src or entry[1] != version:
            entry = (src, version, build())
            self._pack_entry = entry
        return entry[2]

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._pack_entry = None                   # new codes arrive: pack them again
        super()._load_from_state_dict(*args, **kwargs)

    def weight_qparams(self) -> QParams:
        """The weights' ``QParams``: per output channel (axis 0) or per group, zero points 0."""
        s = self.weight_scale
        zp = torch.zeros(s.shape, dtype=torch.int32, device=s.device)
        axis = 0 if self.group_size is None else None
        return QParams(s, zp, self.qmin, self.qmax, axis, self.group_size)

    def _config(self) -> dict:
        """The constructor's keyword options, as saved by ``save_quantized``."""
        return {}

    @classmethod
    def _from_parts(cls, codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
                    in_features: int, out_features: int, config: dict, fn: str):
        """Rebuild a layer from its saved tensors and config (``load_quantized``)."""
        if tuple(codes.shape) != (out_features, in_features):
            raise ValueError(
                f"{fn}: codes have shape {tuple(codes.shape)}, metadata says "
                f"{(out_features, in_features)}"
            )
        return cls(codes, scale, bias, **config)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
            + "".join(f", {k}={v}" for k, v in self._config().items())
        )


class W8A8Linear(_QuantLinear):
    """Int8 weights (per output channel) x per-token activations (dynamic), int32 GEMM.

    ``act_bits`` is the activation grid, part of the layer's definition (and of its
    simulation, ``fake_quantize`` with ``symmetric_qparams(x, act_bits, axis=0)``): by default
    8, or 7 where the fastest exact path here needs it (fbgemm without VNNI, see
    ``int8_activation_bits``). ``path`` names the int8 GEMM that ``forward`` runs.
    """

    description = "dynamic per-token int8"

    def __init__(self, weight_q: torch.Tensor, weight_scale: torch.Tensor,
                 bias: torch.Tensor | None = None, *, method: str = "auto",
                 act_bits: int | None = None) -> None:
        super().__init__()
        fn = "W8A8Linear"
        _check_weight(weight_q, fn)
        check_choice(method, "method", METHODS, fn)
        self._init_int8(weight_q, weight_scale, bias, fn)
        self.method = method
        self.act_bits = (int8_activation_bits(weight_q.device, method) if act_bits is None
                         else check_bits_in(act_bits, (7, 8), fn, why=" (act_bits)"))
        self._route = None

    @classmethod
    def from_float(cls, linear: nn.Linear, *, method: str = "auto",
                   act_bits: int | None = None) -> W8A8Linear:
        """Quantize ``linear``'s weight symmetrically to int8, one scale per output channel."""
        return cls(*cls._quantized_weight(linear, "W8A8Linear.from_float"), method=method,
                   act_bits=act_bits)

    @property
    def path(self) -> str:
        """The int8 GEMM ``forward`` runs on the layer's device: int_mm, fbgemm or float."""
        if self.method != "auto":
            return self.method
        return int8_matmul_path(self.weight_q.device, prepacked=True)

    def _runs_fbgemm(self) -> bool:
        """Whether ``forward`` takes the prepacked fbgemm path: decided once per device and
        ``FBGEMM_ENABLE_INSTRUCTIONS`` setting (the probe's key), not on every call."""
        w = self.weight_q
        key = (w.device, self.method, self.act_bits,
               os.environ.get("FBGEMM_ENABLE_INSTRUCTIONS", ""))
        if self._route is None or self._route[0] != key:
            bits = _fb.exact_bits() if w.device.type == "cpu" else None
            self._route = (key, self.path == "fbgemm" and bits is not None
                           and self.act_bits <= bits)
        return self._route[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._runs_fbgemm():
            w = self.weight_q
            packed = self._pack_of_codes(lambda: _fb.prepack(w))
            return _w8a8_fbgemm(x, packed, w.shape, self.weight_scale, self.bias, self.act_bits)
        return w8a8_linear(x, self.weight_q, self.weight_scale, self.bias, method=self.method,
                           act_bits=self.act_bits)

    def _config(self) -> dict:
        return {"method": self.method, "act_bits": self.act_bits}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, path={self.path!r}"


class FbgemmDynamicLinear(_QuantLinear):
    """The W8A8 layer's int8 weights run by PyTorch's prepacked fbgemm dynamic linear (CPU).

    Activations are quantized inside fbgemm: per tensor, asymmetric, unsigned, 7 bits with
    ``reduce_range=True`` (PyTorch's x86 default), so outputs differ slightly from
    ``W8A8Linear``'s per-token 8-bit ones.
    """

    description = "PyTorch x86 int8"
    cpu_only = True

    @classmethod
    def available(cls, device: str | torch.device = "cpu") -> bool:
        """On the CPU, where this PyTorch build offers fbgemm (``fbgemm_available``)."""
        return super().available(device) and fbgemm_available()

    def __init__(self, weight_q: torch.Tensor, weight_scale: torch.Tensor,
                 bias: torch.Tensor | None = None, *, reduce_range: bool = True) -> None:
        super().__init__()
        fn = "FbgemmDynamicLinear"
        if not fbgemm_available():
            raise RuntimeError(
                f"{fn}: this PyTorch build or CPU has no fbgemm/x86 quantized engine "
                f"(supported engines: {torch.backends.quantized.supported_engines}); "
                "use W8A8Linear, the plain-PyTorch int8 layer, instead"
            )
        _check_weight(weight_q, fn)
        if weight_q.device.type != "cpu":
            raise ValueError(f"{fn}: fbgemm runs on the CPU; the weights are on {weight_q.device}")
        self.reduce_range = check_bool(reduce_range, "reduce_range", fn)
        self._init_int8(weight_q, weight_scale, bias, fn)
        self._pack()

    def _buffers_key(self) -> tuple:
        # Identity and in-place version of every buffer the packed weights were built from:
        # load_state_dict copies into the buffers in place (bumping _version), .to()/.cpu()
        # and assignment replace them (new data_ptr). Either way the pack is stale.
        return tuple(None if t is None else (t.data_ptr(), None if t.is_inference() else t._version,
                                             t.dtype, tuple(t.shape))
                     for t in (self.weight_q, self.weight_scale, self.bias))

    def _pack(self) -> None:
        self._packed = fbgemm_prepack(self.weight_q, self.weight_scale, self.bias)
        self._packed_key = self._buffers_key()

    @classmethod
    def from_float(cls, linear: nn.Linear, *, reduce_range: bool = True) -> FbgemmDynamicLinear:
        """Quantize ``linear`` exactly as ``W8A8Linear.from_float`` does, then prepack it."""
        parts = cls._quantized_weight(linear, "FbgemmDynamicLinear.from_float", cpu=True)
        return cls(*parts, reduce_range=reduce_range)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fn = "FbgemmDynamicLinear"
        if self.weight_q.device.type != "cpu":
            raise ValueError(f"{fn}: fbgemm runs on the CPU only; move the layer back with .cpu()")
        _check_input(x, self.in_features, self.weight_q.device, fn)
        x2 = x.reshape(-1, self.in_features).to(torch.float32).contiguous()
        if not bool(torch.isfinite(x2).all()):
            raise ValueError(f"{fn}: the input holds NaN or infinite values")
        if self._packed_key != self._buffers_key():
            # The weights, scales or bias changed since they were packed (load_state_dict, an
            # in-place edit): fbgemm would silently keep computing with the old ones.
            _check_codes_in(self.weight_q, self.qmin, self.qmax, fn)
            self.weight_qparams()
            self._pack()
        if x2.shape[0] == 0:
            out = x2.new_empty((0, self.out_features))
        else:
            out = fbgemm_linear_dynamic(x2, self._packed, self.reduce_range)
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def _config(self) -> dict:
        return {"reduce_range": self.reduce_range}


class _WeightOnlyLinear(_QuantLinear):
    """Weight-only layers' shared forward: ``method="auto"`` runs fbgemm's fp16-weight GEMM on
    the integer codes where the CPU has it (``path == "fbgemm"``: the codes, exact in float16,
    packed once into 2 bytes per weight beside the stored codes; the scales applied after the
    float32 sums), else dequantizes and calls a float matmul (``path == "dequantize"``, also
    ``method="dequantize"``: bit for bit the fake-quantized simulation)."""

    METHODS = ("auto", "dequantize")

    def _init_method(self, method: str, fn: str) -> None:
        self.method = check_choice(method, "method", self.METHODS, fn)
        self._route = None

    def codes_2d(self) -> torch.Tensor:
        """The integer codes, shape ``(out_features, in_features)``."""
        raise NotImplementedError

    @property
    def path(self) -> str:
        """What ``forward`` runs on the layer's device: ``"fbgemm"`` or ``"dequantize"``."""
        device = getattr(self, self.codes).device
        if self._route is None or self._route[0] != (device, self.method):
            fast = self.method == "auto" and device.type == "cpu" and _fb.fp16_available()
            self._route = ((device, self.method), "fbgemm" if fast else "dequantize")
        return self._route[1]

    def _fp16_packs(self) -> list:
        def build():
            q, g = self.codes_2d(), self.group_size
            return ([_fb.prepack_fp16(q)] if g is None else
                    [_fb.prepack_fp16(q[:, k:k + g]) for k in range(0, q.shape[1], g)])
        return self._pack_of_codes(build)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.path == "fbgemm":
            return _weight_only_fbgemm(x, self._fp16_packs(), self.weight_scale,
                                       self.group_size, self.bias, self.in_features)
        return weight_only_linear(
            x, self.codes_2d(), self.weight_qparams(), self.bias, check_codes=False
        )

    def _config(self) -> dict:
        return {"group_size": self.group_size, "method": self.method}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, path={self.path!r}"


class W8A16Linear(_WeightOnlyLinear):
    """Int8 weights (per output channel, or per group of inputs), float activations."""

    description = "int8 weights, per channel"

    def __init__(self, weight_q: torch.Tensor, weight_scale: torch.Tensor,
                 bias: torch.Tensor | None = None, *, group_size: int | None = None,
                 method: str = "auto") -> None:
        super().__init__()
        self._init_int8(weight_q, weight_scale, bias, "W8A16Linear", group_size)
        self._init_method(method, "W8A16Linear")

    @classmethod
    def from_float(cls, linear: nn.Linear, *, group_size: int | None = None,
                   method: str = "auto") -> W8A16Linear:
        """Quantize ``linear``'s weight to int8: per output channel, or per ``group_size``."""
        parts = cls._quantized_weight(linear, "W8A16Linear.from_float", group_size=group_size)
        return cls(*parts, group_size=group_size, method=method)

    def codes_2d(self) -> torch.Tensor:
        return self.weight_q


class W4A16Linear(_WeightOnlyLinear):
    """4-bit weights (symmetric, per group of ``group_size`` inputs), packed two per byte."""

    description = "packed int4, groups of 128"
    bits = 4
    qmin, qmax = qrange(bits, signed=True, narrow_range=True)
    codes = "weight_packed"

    def __init__(self, weight_packed: torch.Tensor, weight_scale: torch.Tensor,
                 bias: torch.Tensor | None = None, *, in_features: int, out_features: int,
                 group_size: int = 128, method: str = "auto") -> None:
        super().__init__()
        fn = "W4A16Linear"
        if not isinstance(weight_packed, torch.Tensor) or weight_packed.dtype != torch.uint8:
            raise TypeError(f"{fn}: weight_packed must be a uint8 tensor (from pack_bits)")
        self.in_features = _check_size(in_features, "in_features", fn)
        self.out_features = _check_size(out_features, "out_features", fn)
        self.group_size = _check_group_size(group_size, in_features, fn)
        nbytes = packed_nbytes(in_features * out_features, self.bits)
        if weight_packed.numel() != nbytes:
            raise ValueError(
                f"{fn}: {out_features}x{in_features} 4-bit codes take {nbytes} bytes, "
                f"got {weight_packed.numel()}"
            )
        self.register_buffer("weight_packed", weight_packed.detach().reshape(-1).clone())
        self._init_common(weight_scale, bias, weight_packed.device, fn)
        _check_codes_in(self.unpacked_weight(), self.qmin, self.qmax, fn)
        self.weight_qparams()
        self._init_method(method, fn)

    @classmethod
    def from_float(cls, linear: nn.Linear, *, group_size: int = 128,
                   method: str = "auto") -> W4A16Linear:
        """Quantize ``linear``'s weight to signed 4 bits ``[-7, 7]``, one scale per group."""
        q, scale, b = cls._quantized_weight(linear, "W4A16Linear.from_float",
                                            group_size=group_size)
        return cls(pack_bits(q, cls.bits, signed=True), scale, b,
                   in_features=linear.in_features, out_features=linear.out_features,
                   group_size=group_size, method=method)

    @classmethod
    def _from_parts(cls, codes, scale, bias, in_features, out_features, config, fn):
        return cls(codes, scale, bias, in_features=in_features, out_features=out_features,
                   **config)

    def unpacked_weight(self) -> torch.Tensor:
        """The int8 codes, shape ``(out_features, in_features)``."""
        n = self.in_features * self.out_features
        q = unpack_bits(self.weight_packed, self.bits, n, signed=True)
        return q.view(self.out_features, self.in_features)

    def codes_2d(self) -> torch.Tensor:
        return self.unpacked_weight()


# ---------------------------------------------------------------- registry

#: Every quantized linear layer, by class name (the order the course shows them in).
QUANTIZED_LINEARS: dict[str, type] = {
    c.__name__: c for c in (W8A8Linear, FbgemmDynamicLinear, W8A16Linear, W4A16Linear)
}


def quantized_linear_types(device: str | torch.device = "cpu") -> dict[str, type]:
    """The layers of ``QUANTIZED_LINEARS`` that run on ``device`` here (fbgemm: CPU only,
    where this PyTorch build has it). Each has ``from_float(linear)`` and ``description``."""
    return {name: cls for name, cls in QUANTIZED_LINEARS.items() if cls.available(device)}


# ---------------------------------------------------------------- safetensors save / load


def save_quantized(module: nn.Module, path: str | os.PathLike) -> str:
    """Write a quantized layer to ``path`` as safetensors (no pickle); returns the path.

    Integer codes keep their dtype (int8, or uint8 packed 4-bit), scales and bias are
    float32; the class name and a JSON config (shape and options) go into the metadata.
    """
    from safetensors.torch import save_file

    fn = "save_quantized"
    name = type(module).__name__
    if QUANTIZED_LINEARS.get(name) is not type(module):
        raise TypeError(f"{fn}: expected one of {', '.join(QUANTIZED_LINEARS)}, got {name}")
    config = {"in_features": module.in_features, "out_features": module.out_features,
              **module._config()}
    meta = {"format": _FORMAT, "class": name, "config": json.dumps(config, sort_keys=True)}
    tensors = {module.codes: getattr(module, module.codes), "weight_scale": module.weight_scale}
    if module.bias is not None:
        tensors["bias"] = module.bias
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    path = os.fspath(path)
    save_file(tensors, path, metadata=meta)
    return path


def load_quantized(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> nn.Module:
    """Read a layer written by ``save_quantized``; bit-exact codes, scales and bias."""
    from safetensors import safe_open

    fn = "load_quantized"
    path = os.fspath(path)
    with safe_open(path, framework="pt", device="cpu") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("format") != _FORMAT:
        raise ValueError(
            f"{fn}: {path} is not a quantcourse quantized layer (format "
            f"{meta.get('format')!r}, expected {_FORMAT!r}; files of an older format: "
            "save the layer again)"
        )
    cls = QUANTIZED_LINEARS.get(meta.get("class"))
    if cls is None:
        raise ValueError(f"{fn}: unknown layer class {meta.get('class')!r} in {path}")
    try:
        config = json.loads(meta["config"])
        in_f, out_f = int(config.pop("in_features")), int(config.pop("out_features"))
    except (KeyError, ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"{fn}: bad or missing shape metadata in {path}: {err}") from None
    for key in (cls.codes, "weight_scale"):
        if key not in tensors:
            raise ValueError(f"{fn}: {path} has no {key!r} tensor")
    dev = torch.device("cpu") if cls.cpu_only else torch.device(device)
    w, s = tensors[cls.codes].to(dev), tensors["weight_scale"].to(dev)
    b = tensors["bias"].to(dev) if "bias" in tensors else None
    return cls._from_parts(w, s, b, in_f, out_f, config, fn)
