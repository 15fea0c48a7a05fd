"""What this machine's int8 hardware computes: CPU features and a model of the AVX2 u8*s8 path.

Introduced in ``15_energy_and_deployment.ipynb`` (section "hardware that changes the
answer"; ``ENERGY_PJ`` in its energy section); ``arithmetic_intensity`` is the roofline of
``14_int8_kernels_and_hardware.ipynb``.

x86 int8 engines (fbgemm, oneDNN, ONNX Runtime's MLAS) multiply unsigned 8-bit activations by
signed 8-bit weights. How they add the products depends on the CPU:

* with VNNI (``vpdpbusd``: AVX-512 VNNI, AVX-VNNI, AMX) every product goes straight into an
  int32 accumulator, so the result is the exact integer dot product;
* without it (AVX2, AVX-512 without VNNI) the engines use ``vpmaddubsw``, which multiplies
  adjacent pairs ``a[k] * b[k] + a[k+1] * b[k+1]`` and **saturates** that pair sum to int16
  ``[-32768, 32767]``; ``vpmaddwd`` with ones then widens the pair sums to int32 exactly. A pair
  of large codes (``255 * 127 * 2 = 64770``) does not fit, so the answer changes.

Functions:

* ``cpu_flags()``: the CPU feature flags the OS reports (``/proc/cpuinfo``; empty elsewhere).
* ``u8s8_has_vnni(engine)``: whether ``engine``'s u8*s8 dot products run on VNNI here
  (``"fbgemm"`` also honours ``FBGEMM_ENABLE_INSTRUCTIONS``, ``"onednn"``
  ``ONEDNN_MAX_CPU_ISA``; ``"onnxruntime"`` follows the CPU flags only).
* ``u8s8_matmul_saturating(a, b)``: the AVX2 model, ``(M, K) uint8 @ (K, N) int8 -> int32``
  with pairs ``(0, 1), (2, 3), ...`` along ``K`` summed in saturating int16, then exactly in
  int32. Pure PyTorch integer arithmetic: identical on every machine.
* ``u8s8_saturated_pairs(a, b)``: how many pair sums that model clips.
* ``u8s8_matmul_exact(a, b)``: the VNNI result (the exact integer product), for comparison.
* ``fbgemm_activation_qparams(x, reduce_range)``: the per-tensor uint8 grid fbgemm's dynamic
  linear chooses for its input (PyTorch's ``ChooseQuantizationParams``).
* ``fbgemm_dynamic_linear_model(x, weight_q, weight_scale, bias, reduce_range=..., saturate=...)``:
  the whole ``torch.ops.quantized.linear_dynamic`` computation, with exact or saturating pair
  sums: what ``FbgemmDynamicLinear`` returns on a VNNI / a non-VNNI machine.

Cost models, from the same notebook's sections "the roofline" and "energy":

* ``arithmetic_intensity(batch, in_features, out_features, weight_bits, act_bytes=4)``: FLOPs
  per byte moved by a linear layer.
* ``ENERGY_PJ``: energy per operation in picojoules (Horowitz, ISSCC 2014, 45 nm).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ._validate import check_int, check_real
from .affine import QParams

__all__ = [
    "INT16_MAX",
    "INT16_MIN",
    "cpu_flags",
    "u8s8_has_vnni",
    "u8s8_matmul_saturating",
    "u8s8_matmul_exact",
    "u8s8_saturated_pairs",
    "fbgemm_activation_qparams",
    "fbgemm_dynamic_linear_model",
    "arithmetic_intensity",
    "ENERGY_PJ",
]

INT16_MIN, INT16_MAX = -(2**15), 2**15 - 1
# Flags of instructions that add u8*s8 products straight into int32 (no int16 step).
_VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
_ENGINES = ("cpu", "fbgemm", "onednn", "onnxruntime")
# K up to which no int32 accumulator of int16 pair sums can overflow: K/2 * 2^15 < 2^31.
MAX_K = 2 * ((2**31 - 1) // 2**15)
# Pair products held at once by the model (elements), to bound its memory.
_CHUNK = 1 << 22


def cpu_flags(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags the OS reports (``flags`` / ``Features`` lines); empty if unknown."""
    flags: set[str] = set()
    try:
        with open(Path(cpuinfo)) as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags.update(line.split(":", 1)[1].split())
    except OSError:
        pass  # not Linux (or no /proc): nothing is known
    return frozenset(flags)


def u8s8_has_vnni(engine: str = "cpu", *, flags: frozenset[str] | None = None,
                  environ: dict[str, str] | None = None) -> bool:
    """Whether ``engine``'s u8*s8 int8 dot products run on VNNI (exact) on this machine.

    ``"cpu"``/``"onnxruntime"``: any of AVX-512 VNNI, AVX-VNNI, AMX int8 in the CPU flags.
    ``"fbgemm"``: AVX-512 VNNI (fbgemm has no AVX-VNNI kernels), unless
    ``FBGEMM_ENABLE_INSTRUCTIONS`` caps it at ``AVX2``, ``AVX512`` or ``AVX512_256`` (fbgemm
    reads it at first use, so set it before the process runs its first quantized op).
    ``"onednn"``: the CPU flags, unless ``ONEDNN_MAX_CPU_ISA`` caps it below VNNI; PyTorch's
    reported capability (``torch.backends.cpu.get_cpu_capability()``) must also reach AVX512
    for its AVX-512 VNNI path. ``flags`` and ``environ`` replace the real ones (for tests).
    """
    fn = "u8s8_has_vnni"
    if engine not in _ENGINES:
        raise ValueError(f"{fn}: engine must be one of {', '.join(_ENGINES)}, got {engine!r}")
    flags = cpu_flags() if flags is None else frozenset(flags)
    env = os.environ if environ is None else environ
    if engine in ("cpu", "onnxruntime"):
        return any(f in flags for f in _VNNI_FLAGS)
    if engine == "fbgemm":
        forced = env.get("FBGEMM_ENABLE_INSTRUCTIONS", "").strip().upper()
        if forced in ("AVX2", "AVX512", "AVX512_256"):
            return False
        return "avx512_vnni" in flags
    # oneDNN
    isa = env.get("ONEDNN_MAX_CPU_ISA", env.get("DNNL_MAX_CPU_ISA", "")).strip().upper()
    if isa and "VNNI" not in isa and "AMX" not in isa and isa != "ALL":
        return False
    capability = torch.backends.cpu.get_cpu_capability().upper()
    if "avx512_vnni" in flags or "amx_int8" in flags:
        return capability.startswith("AVX512") or "avx_vnni" in flags
    return "avx_vnni" in flags


def _check_u8s8(a: object, b: object, fn: str) -> tuple[torch.Tensor, torch.Tensor]:
    for name, t, dtype in (("a", a, torch.uint8), ("b", b, torch.int8)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype != dtype:
            raise TypeError(f"{fn}: {name} must be a {dtype} tensor (activations u8, weights "
                            f"s8), got {t.dtype}")
        if t.ndim != 2:
            raise ValueError(f"{fn}: {name} must be 2-D, got shape {tuple(t.shape)}")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"{fn}: inner dimensions differ: a is {tuple(a.shape)} and b is "
                         f"{tuple(b.shape)} (need a (M, K) and b (K, N))")
    if a.device != b.device:
        raise ValueError(f"{fn}: a is on {a.device} but b is on {b.device}")
    if a.shape[1] > MAX_K:
        raise ValueError(f"{fn}: K = {a.shape[1]} can overflow the int32 accumulator of int16 "
                         f"pair sums (K <= {MAX_K})")
    return a, b


def _pair_sums(a: torch.Tensor, b: torch.Tensor):
    """Yield (column slice, pair sums (M, K/2, n) in int32) over chunks of b's columns."""
    m, k = a.shape
    n = b.shape[1]
    a32, b32 = a.to(torch.int32), b.to(torch.int32)
    if k % 2:  # an odd K is padded with a zero product, as the packed kernels do
        a32 = torch.cat([a32, a32.new_zeros(m, 1)], dim=1)
        b32 = torch.cat([b32, b32.new_zeros(1, n)], dim=0)
    half = a32.shape[1] // 2
    a2 = a32.reshape(m, half, 2)                   # (M, K/2, 2): elements 2i, 2i+1
    b2 = b32.reshape(half, 2, n)                   # (K/2, 2, N)
    step = max(1, _CHUNK // max(1, m * a2.shape[1]))
    for j in range(0, n, step):
        bj = b2[:, :, j:j + step]
        pairs = a2[:, :, 0, None] * bj[None, :, 0, :] + a2[:, :, 1, None] * bj[None, :, 1, :]
        yield slice(j, j + step), pairs


def u8s8_matmul_saturating(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(M, K) uint8 @ (K, N) int8 -> (M, N) int32`` as AVX2's ``vpmaddubsw`` computes it.

    Products of adjacent ``K`` elements ``(2i, 2i+1)`` are added in pairs, each pair sum
    clamped to int16 ``[-32768, 32767]``, and the pair sums added exactly in int32.
    """
    a, b = _check_u8s8(a, b, "u8s8_matmul_saturating")
    out = torch.zeros(a.shape[0], b.shape[1], dtype=torch.int64, device=a.device)
    for cols, pairs in _pair_sums(a, b):
        out[:, cols] = pairs.clamp_(INT16_MIN, INT16_MAX).sum(dim=1, dtype=torch.int64)
    return out.to(torch.int32)


def u8s8_saturated_pairs(a: torch.Tensor, b: torch.Tensor) -> int:
    """How many pair sums of ``u8s8_matmul_saturating(a, b)`` leave int16 and are clipped."""
    a, b = _check_u8s8(a, b, "u8s8_saturated_pairs")
    return sum(int(((p < INT16_MIN) | (p > INT16_MAX)).sum()) for _, p in _pair_sums(a, b))


def u8s8_matmul_exact(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(M, K) uint8 @ (K, N) int8 -> (M, N) int32``, exact (what VNNI computes)."""
    a, b = _check_u8s8(a, b, "u8s8_matmul_exact")
    out = torch.zeros(a.shape[0], b.shape[1], dtype=torch.int64, device=a.device)
    for cols, pairs in _pair_sums(a, b):
        out[:, cols] = pairs.sum(dim=1, dtype=torch.int64)
    return out.to(torch.int32)


# ---------------------------------------------------------------- fbgemm's dynamic linear


def _check_input(x: object, fn: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn}: x must be a torch.Tensor, got {type(x).__name__}")
    if x.is_complex() or not x.is_floating_point():
        raise TypeError(f"{fn}: x must be a real floating-point tensor, got {x.dtype}")
    n_bad = int((~torch.isfinite(x)).sum())
    if n_bad:
        raise ValueError(f"{fn}: x holds {n_bad} NaN or infinite value(s)")
    return x


def fbgemm_activation_qparams(x: torch.Tensor, *, reduce_range: bool = True) -> QParams:
    """The per-tensor asymmetric uint8 grid fbgemm's dynamic linear picks for input ``x``.

    PyTorch's ``ChooseQuantizationParams``: the range ``[min(x, 0), max(x, 0)]`` over the whole
    tensor, grid ``[0, 127]`` with ``reduce_range`` else ``[0, 255]``, the scale computed in
    float64 (then stored as float32), the zero point ``round_half_even(-min / scale)`` from the
    float64 scale.
    """
    fn = "fbgemm_activation_qparams"
    _check_input(x, fn)
    if not isinstance(reduce_range, bool):
        raise TypeError(f"{fn}: reduce_range must be True or False, got {reduce_range!r}")
    qmax = 127 if reduce_range else 255
    if x.numel() == 0:
        lo = hi = 0.0
    else:
        lo_t, hi_t = torch.aminmax(x.detach().float())
        lo, hi = min(float(lo_t), 0.0), max(float(hi_t), 0.0)
    scale = (hi - lo) / qmax
    scale32 = torch.tensor(scale, dtype=torch.float32)
    if float(scale32) == 0.0 or not bool(torch.isfinite(1.0 / scale32)):
        scale = 0.1
    if scale < 6.1e-5:  # PyTorch's SMALL_SCALE_THRESHOLD: widen tiny ranges
        amp = 6.1e-5 / scale
        lo, hi = lo * amp, hi * amp
        scale = 6.1e-5
    z_min, z_max = -lo / scale, qmax - hi / scale
    z = z_min if -abs(lo / scale) < qmax - abs(hi / scale) else z_max
    z = int(min(max(torch.tensor(z, dtype=torch.float64).round().item(), 0), qmax))
    return QParams(torch.tensor(scale, dtype=torch.float32), torch.tensor(z, dtype=torch.int32),
                   0, qmax)


def _fbgemm_quantize(x: torch.Tensor, qp: QParams) -> torch.Tensor:
    # fbgemm's vectorised Quantize: one fused multiply-add x * (1/s) + z in float32, then
    # round half to even. float64 holds x * (1/s) exactly, so one rounding to float32 follows.
    inv = (1.0 / qp.scale.float()).double()
    t = (x.double() * inv + float(qp.zero_point)).float()
    return torch.round(t).clamp_(qp.qmin, qp.qmax).to(torch.uint8)


def fbgemm_dynamic_linear_model(x: torch.Tensor, weight_q: torch.Tensor,
                                weight_scale: torch.Tensor, bias: torch.Tensor | None = None,
                                *, reduce_range: bool = True,
                                saturate: bool) -> torch.Tensor:
    """What ``torch.ops.quantized.linear_dynamic`` (fbgemm) returns, computed in PyTorch.

    ``x`` (..., K) float; ``weight_q`` (N, K) int8 codes with zero point 0 and one float32
    scale per output channel (``weight_scale``, shape (N,)); ``bias`` (N,) float or None.
    The input is quantized with ``fbgemm_activation_qparams``; the integer product is exact
    (``saturate=False``: a VNNI machine) or ``u8s8_matmul_saturating`` (``saturate=True``: AVX2);
    the zero point is taken out with the weights' column sums and each output rescaled by
    ``s_x * s_w[n]`` before the bias is added, as fbgemm's float output stage does.
    """
    fn = "fbgemm_dynamic_linear_model"
    _check_input(x, fn)
    if not isinstance(weight_q, torch.Tensor) or weight_q.dtype != torch.int8 \
            or weight_q.ndim != 2:
        raise TypeError(f"{fn}: weight_q must be a 2-D int8 tensor (N, K)")
    n_out, k = weight_q.shape
    if x.ndim == 0 or x.shape[-1] != k:
        raise ValueError(f"{fn}: x's last dimension must be K = {k}, got shape {tuple(x.shape)}")
    if not isinstance(weight_scale, torch.Tensor) or tuple(weight_scale.shape) != (n_out,):
        raise ValueError(f"{fn}: weight_scale must be a tensor of shape ({n_out},)")
    if not weight_scale.is_floating_point() or not bool((weight_scale > 0).all()) \
            or not bool(torch.isfinite(weight_scale).all()):
        raise ValueError(f"{fn}: weight_scale must hold finite positive floats")
    if bias is not None and (not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (n_out,)):
        raise ValueError(f"{fn}: bias must be None or a tensor of shape ({n_out},)")
    if not isinstance(saturate, bool) or not isinstance(reduce_range, bool):
        raise TypeError(f"{fn}: saturate and reduce_range must be True or False")
    x2 = x.detach().reshape(-1, k).float()
    qp = fbgemm_activation_qparams(x2, reduce_range=reduce_range)
    codes = _fbgemm_quantize(x2, qp)
    w_t = weight_q.t()
    acc = (u8s8_matmul_saturating if saturate else u8s8_matmul_exact)(codes, w_t)
    col_sums = weight_q.to(torch.int64).sum(dim=1)
    acc = acc.to(torch.int64) - int(qp.zero_point) * col_sums[None, :]
    out = acc.float() * (qp.scale.float() * weight_scale.float())[None, :]
    if bias is not None:
        out = out + bias.detach().float()[None, :]
    return out.reshape(*x.shape[:-1], n_out).to(x.dtype)


# ---------------------------------------------------------------- cost models

# M. Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014, 45 nm:
# energy per operation in picojoules (the paper's estimates, not measurements of this machine).
ENERGY_PJ: dict[str, float] = {
    "int8_add": 0.03,
    "int32_add": 0.1,
    "int8_mult": 0.2,
    "int32_mult": 3.1,
    "fp16_add": 0.4,
    "fp16_mult": 1.1,
    "fp32_add": 0.9,
    "fp32_mult": 3.7,
    "sram_read_32bit_8kb": 5.0,
    "dram_read_32bit": 640.0,
}


def arithmetic_intensity(batch: int, in_features: int, out_features: int, weight_bits: float,
                         act_bytes: float = 4) -> float:
    """FLOP per byte of a linear layer: ``2BKN`` FLOPs over the weights read once
    (``KN weight_bits / 8`` bytes) plus the inputs read and outputs written
    (``B (K + N) act_bytes``)."""
    fn = "arithmetic_intensity"
    for name, value in (("batch", batch), ("in_features", in_features),
                        ("out_features", out_features)):
        check_int(value, name, fn)
    check_real(weight_bits, "weight_bits", fn, lo=0, lo_open=True)
    check_real(act_bytes, "act_bytes", fn, lo=0)
    flops = 2 * batch * in_features * out_features
    nbytes = (in_features * out_features * weight_bits / 8
              + batch * (in_features + out_features) * act_bytes)
    return flops / nbytes
