"""Int8 GEMM kernels and quantized linear layers (W8A8, W8A16, W4A16, fbgemm dynamic).

Introduced in ``14_int8_kernels_and_hardware.ipynb``.

Functional kernels (tensor in, tensor out):

* ``int8_matmul(a, b)``: ``(M, K) int8 @ (K, N) int8 -> (M, N) int32``, exact. The path
  depends on the device (``int8_matmul_path`` says which one ``method="auto"`` takes):

  - CUDA: ``torch._int_mm`` (cuBLASLt int8 tensor cores). It rejects ``M <= 16`` and ``K`` or
    ``N`` that are not multiples of 8, so such shapes are padded with zeros (zeros add
    nothing to a dot product) and the result is sliced back.
  - CPU with AVX-512 VNNI and oneDNN enabled: ``torch._int_mm``, which PyTorch then routes to
    oneDNN's VNNI int8 GEMM (on the course machine: 2.4-2.8x faster than a float32 matmul at
    512x4096x4096, about even at batch 1).
  - any other CPU: ``torch._int_mm`` is a scalar reference loop there (15x slower than
    float32 at 1x4096x4096, 300x at 64x4096x4096), so the product is computed in float32
    instead, which is exact by
    construction: every product of two int8 values has ``|p| <= 2^14``, so a sum over at
    most 1024 of them is an integer ``<= 2^24`` and every float32 partial sum of it is exact,
    whatever order the BLAS adds in. ``K`` is cut into blocks of 1024; each block's float32
    result is converted to int32 and the blocks are added in int32.

  Every path computes the same integers. ``K`` is limited to 131071 so that no int32
  accumulator can overflow (``131071 * 128 * 128 < 2^31``).
* ``int8_matmul_reference(a, b)``: the same product in float64 on the CPU (exact for any
  ``K`` allowed here, since every partial sum stays far below ``2^53``), for tests.
* ``quantize_per_token(x)``: symmetric int8 codes with one scale per row of ``x`` flattened
  to ``(-1, features)``.
* ``w8a8_linear(x, w_q, w_scale, bias)``: per-token int8 activations times per-output-channel
  int8 weights, int32 accumulation, then the fused rescale
  ``out = acc * (s_x[:, None] * s_w[None, :]) + bias``.
* ``weight_only_linear(x, w_q, qp, bias)``: dequantize the weights, then a float matmul.

Module wrappers (``nn.Module``; inference only, all state in buffers), each built from a
float ``nn.Linear`` with ``from_float(linear, ...)``:

* ``W8A8Linear``: int8 weights per output channel, int8 activations per token (dynamic).
* ``W8A16Linear``: int8 weights (per output channel, or per group), float activations.
* ``W4A16Linear``: 4-bit weights per group of ``group_size`` inputs (default 128), two codes
  per byte via ``pack_bits``, unpacked and dequantized on the fly.
* ``FbgemmDynamicLinear``: the same int8 weights run through PyTorch's prepacked fbgemm
  dynamic int8 linear (``torch.ops.quantized.linear_dynamic``), the fast CPU path
  (``fbgemm_available()`` says whether this PyTorch build has it). Its activations differ
  from ``W8A8Linear``'s: fbgemm quantizes them per tensor (one scale for the whole batch),
  asymmetric, unsigned, and by default with ``reduce_range=True``, i.e. 7 bits ``[0, 127]``
  instead of 8 -- the headroom that keeps AVX2's 16-bit intermediate sums from saturating.
  Expect outputs about 1-3% (relative) away from ``W8A8Linear``'s, not bit-identical.

Weights are quantized with ``symmetric_qparams`` (narrow range: int8 ``[-127, 127]``, int4
``[-7, 7]``), so every layer agrees with its fake-quantized float simulation
(``fake_quantize`` on the weights, and per token on the activations for W8A8) to float
rounding; the weight-only layers agree bit for bit.

``save_quantized(module, path)`` / ``load_quantized(path)`` store a layer as safetensors
(integer codes, float32 scales and bias, shapes in the metadata; no pickle); a round trip is
bit-exact.

Example::

    >>> lin = torch.nn.Linear(256, 64)
    >>> q = W8A8Linear.from_float(lin)
    >>> y = q(torch.randn(4, 256))                       # (4, 64) float32
    >>> int8_matmul(torch.ones(2, 3, dtype=torch.int8), torch.ones(3, 5, dtype=torch.int8))[0, 0]
    tensor(3, dtype=torch.int32)
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import check_float_tensor
from .affine import QParams, dequantize, quantize, symmetric_qparams
from .packing import pack_bits, packed_nbytes, unpack_bits

__all__ = [
    "int8_matmul",
    "int8_matmul_reference",
    "int8_matmul_path",
    "quantize_per_token",
    "w8a8_linear",
    "weight_only_linear",
    "W8A8Linear",
    "W8A16Linear",
    "W4A16Linear",
    "FbgemmDynamicLinear",
    "fbgemm_available",
    "save_quantized",
    "load_quantized",
]

# Largest K for which no int8 x int8 dot product can overflow an int32 accumulator:
# K * (-128) * (-128) <= 2^31 - 1.
MAX_K = (2**31 - 1) // (128 * 128)
# Float32 represents every integer up to 2^24 exactly; 1024 products of at most 2^14 each
# stay within it, so a float32 matmul over 1024 inputs is an exact integer computation.
_FLOAT_BLOCK = 1024
# Cap on the float32 partial results the block path holds at once (elements; 64 MiB).
_PARTIALS_CAP = 1 << 24
_METHODS = ("auto", "int_mm", "float")
_FORMAT = "quantcourse.kernels/1"


# ---------------------------------------------------------------- int8 GEMM


def _check_int8_pair(a: object, b: object, fn: str) -> None:
    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype != torch.int8:
            raise TypeError(
                f"{fn}: {name} must be an int8 tensor (the output of quantize with an int8 "
                f"grid), got {t.dtype}"
            )
        if t.ndim != 2:
            raise ValueError(f"{fn}: {name} must be 2-D, got shape {tuple(t.shape)}")
    if a.shape[1] != b.shape[0]:
        raise ValueError(
            f"{fn}: inner dimensions differ: a is {tuple(a.shape)} and b is {tuple(b.shape)} "
            "(need a (M, K) and b (K, N))"
        )
    if a.device != b.device:
        raise ValueError(f"{fn}: a is on {a.device} but b is on {b.device}")
    if a.shape[1] > MAX_K:
        raise ValueError(
            f"{fn}: K = {a.shape[1]} can overflow the int32 accumulator "
            f"(K * 128 * 128 must stay below 2^31, so K <= {MAX_K}); split K and add the "
            "partial products in int64"
        )


_INT_MM_PROBE: dict[str, bool] = {}


def _cpu_int_mm_is_exact() -> bool:
    """Whether CPU ``_int_mm`` returns exact int32 sums on operands that saturate int16 pairs.

    PyTorch decides from the CPU flags alone; oneDNN may still run a kernel without VNNI (its
    ISA capped by ``ONEDNN_MAX_CPU_ISA``, as in the emulated CI run), which adds u8 x s8 pairs
    into saturating int16 and returns wrong sums. Probe once with the worst case and remember.
    """
    key = os.environ.get("ONEDNN_MAX_CPU_ISA", "")
    if key not in _INT_MM_PROBE:
        a = torch.full((32, 64), 127, dtype=torch.int8)
        a[16:] = -128
        b = torch.full((64, 8), 127, dtype=torch.int8)
        b[:, 4:] = -128
        want = (a.long() @ b.long()).to(torch.int32)
        try:
            _INT_MM_PROBE[key] = torch.equal(torch._int_mm(a, b), want)
        except RuntimeError:
            _INT_MM_PROBE[key] = False
    return _INT_MM_PROBE[key]


def _cpu_int_mm_is_fast() -> bool:
    """True where PyTorch sends CPU ``_int_mm`` to oneDNN's VNNI GEMM, not its scalar loop,
    and that GEMM is exact."""
    vnni = getattr(torch.cpu, "_is_vnni_supported", None)
    return bool(
        torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
        and vnni is not None
        and vnni()
        and _cpu_int_mm_is_exact()
    )


def int8_matmul_path(device: str | torch.device = "cpu") -> str:
    """Which exact path ``int8_matmul(method="auto")`` takes on ``device``.

    Returns ``"int_mm"`` (``torch._int_mm``: cuBLASLt on CUDA, oneDNN VNNI on CPU) or
    ``"float"`` (float32 blocks of 1024 along K, added in int32).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return "int_mm"
    if device.type == "cpu" and _cpu_int_mm_is_fast():
        return "int_mm"
    return "float"


@contextlib.contextmanager
def _ieee_fp32_matmul(device_type: str) -> Iterator[None]:
    """Force IEEE float32 matmuls (no TF32 / bf16 shortcuts) for the exact float path."""
    backend = torch.backends.cuda.matmul if device_type == "cuda" else None
    if device_type == "cpu":
        backend = getattr(torch.backends.mkldnn, "matmul", None)
    prev = getattr(backend, "fp32_precision", None) if backend is not None else None
    if prev is not None:  # PyTorch >= 2.9: per-backend setting ("none" inherits the global)
        inherited = getattr(torch.backends, "fp32_precision", "none")
        exact = prev == "ieee" or (prev == "none" and inherited in ("none", "ieee"))
        if not exact:
            backend.fp32_precision = "ieee"
        try:
            yield
        finally:
            if not exact:
                backend.fp32_precision = prev
    else:  # older PyTorch: the global setting
        legacy = torch.get_float32_matmul_precision()
        if legacy != "highest":
            torch.set_float32_matmul_precision("highest")
        try:
            yield
        finally:
            if legacy != "highest":
                torch.set_float32_matmul_precision(legacy)


def _float_blocks(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact int8 GEMM through float32 matmuls over blocks of at most 1024 along K."""
    M, K = a.shape
    N = b.shape[1]
    with _ieee_fp32_matmul(a.device.type):
        if K <= _FLOAT_BLOCK:
            bf = b.t().float().t() if b.t().is_contiguous() else b.float()
            return torch.mm(a.float(), bf).to(torch.int32)
        n_blocks = -(-K // _FLOAT_BLOCK)
        kp = n_blocks * _FLOAT_BLOCK
        # Zero-pad K to whole blocks (zeros add nothing); converting is a copy anyway.
        af = torch.empty((M, kp), dtype=torch.float32, device=a.device)
        af[:, :K] = a
        af[:, K:] = 0
        a3 = af.view(M, n_blocks, _FLOAT_BLOCK).transpose(0, 1)  # (blocks, M, 1024)
        if b.t().is_contiguous() and not b.is_contiguous():
            # b is a weight's transpose: convert it in its own (N, K) layout (a transposing
            # copy is several times slower) and hand BLAS column-major blocks.
            bt = torch.empty((N, kp), dtype=torch.float32, device=a.device)
            bt[:, :K] = b.t()
            bt[:, K:] = 0
            b3 = bt.view(N, n_blocks, _FLOAT_BLOCK).permute(1, 2, 0)  # (blocks, 1024, N)
        else:
            bf = torch.empty((kp, N), dtype=torch.float32, device=a.device)
            bf[:K] = b
            bf[K:] = 0
            b3 = bf.view(n_blocks, _FLOAT_BLOCK, N)  # (blocks, 1024, N)
        per = max(1, _PARTIALS_CAP // max(1, M * N))
        out = None
        for c in range(0, n_blocks, per):
            partial = torch.bmm(a3[c : c + per], b3[c : c + per])  # exact integers
            s = partial.to(torch.int32).sum(0, dtype=torch.int32)
            out = s if out is None else out.add_(s)
        return out


def _int_mm_padded(a: torch.Tensor, b: torch.Tensor, *, pad: bool | None = None) -> torch.Tensor:
    """``torch._int_mm`` with the shapes CUDA rejects padded with zeros, sliced back.

    ``pad`` defaults to "on CUDA"; tests force it on the CPU to check the padding itself.
    """
    M, K = a.shape
    N = b.shape[1]
    if pad is None:
        pad = a.device.type == "cuda"
    if not pad:
        # CPU _int_mm takes any shape (exact; fast only with oneDNN + VNNI).
        return torch._int_mm(a.contiguous(), b)
    # cuBLASLt int8 GEMM: M > 16, K and N multiples of 8 (some PyTorch releases also asked
    # for K > 16, so K and N are padded to at least 24, which costs nothing measurable).
    mp = M if M > 16 else 32
    kp = max(24, -(-K // 8) * 8)
    np_ = max(24, -(-N // 8) * 8)
    if (mp, kp, np_) == (M, K, N):
        # Row-major or column-major b is handled by cuBLAS; anything else is copied.
        if not (b.is_contiguous() or b.t().is_contiguous()):
            b = b.contiguous()
        return torch._int_mm(a.contiguous(), b)
    ap = torch.zeros((mp, kp), dtype=torch.int8, device=a.device)
    ap[:M, :K] = a
    bp = torch.zeros((kp, np_), dtype=torch.int8, device=b.device)
    bp[:K, :N] = b
    return torch._int_mm(ap, bp)[:M, :N].contiguous()


_warned_int_mm_fallback = False


def int8_matmul(a: torch.Tensor, b: torch.Tensor, *, method: str = "auto") -> torch.Tensor:
    """Exact ``(M, K) int8 @ (K, N) int8 -> (M, N) int32`` on ``a``'s device.

    ``method``: ``"auto"`` (the fastest exact path here, see ``int8_matmul_path``),
    ``"int_mm"`` (``torch._int_mm``, padded on CUDA) or ``"float"`` (float32 blocks).
    """
    fn = "int8_matmul"
    if method not in _METHODS:
        raise ValueError(f"{fn}: method must be one of {', '.join(_METHODS)}, got {method!r}")
    _check_int8_pair(a, b, fn)
    M, K = a.shape
    N = b.shape[1]
    if M == 0 or N == 0 or K == 0:
        return torch.zeros((M, N), dtype=torch.int32, device=a.device)
    if method == "auto":
        method = int8_matmul_path(a.device)
        if method == "int_mm" and a.device.type == "cuda":
            try:
                return _int_mm_padded(a, b)
            except RuntimeError as err:  # e.g. a GPU without int8 GEMM support
                global _warned_int_mm_fallback
                if not _warned_int_mm_fallback:
                    _warned_int_mm_fallback = True
                    warnings.warn(
                        f"{fn}: torch._int_mm failed on {a.device} ({err}); using the exact "
                        "float32 block path instead",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                return _float_blocks(a, b)
    if method == "int_mm":
        if a.device.type == "cpu" and not _cpu_int_mm_is_exact():
            raise RuntimeError(
                f"{fn}: torch._int_mm returns wrong sums on this CPU configuration (oneDNN runs "
                "an int8 kernel without VNNI, e.g. under ONEDNN_MAX_CPU_ISA=AVX2, and its "
                "u8 x s8 pair sums saturate int16); use method='auto' or 'float'"
            )
        return _int_mm_padded(a, b)
    return _float_blocks(a, b)


def int8_matmul_reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The same product as ``int8_matmul``, in float64 on the CPU (exact), on ``a``'s device."""
    _check_int8_pair(a, b, "int8_matmul_reference")
    out = a.cpu().double() @ b.cpu().double()
    return out.to(torch.int32).to(a.device)


# ---------------------------------------------------------------- functional linear kernels


def quantize_per_token(x: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, QParams]:
    """Symmetric codes with one scale per row of ``x`` flattened to ``(-1, x.shape[-1])``.

    Returns ``(q, qp)``: ``q`` is 2-D ``(tokens, features)``, ``qp`` per channel along axis 0.
    """
    fn = "quantize_per_token"
    check_float_tensor(x, fn)
    if x.ndim == 0:
        raise ValueError(f"{fn}: need at least one dimension (the features), got a scalar")
    x2 = x.reshape(-1, x.shape[-1])
    # symmetric_qparams checks the data: a NaN or Inf anywhere shows up in a row's min/max.
    qp = symmetric_qparams(x2, bits, axis=0)
    if x2.numel() == 0:
        return quantize(x2, qp), qp
    # quantize's arithmetic, round_half_even(x * (1/s)) clamped to the grid, done in place:
    # the values were just proved finite, so quantize's own finiteness pass (the costliest
    # step on an activation that is quantized at every call) is skipped. A test pins the codes
    # to quantize(x2, qp) bit for bit.
    q = x2.float() * torch.reciprocal(qp.scale).unsqueeze(1)
    q.round_().clamp_(qp.qmin, qp.qmax)
    return q.to(qp.dtype), qp


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


def w8a8_linear(
    x: torch.Tensor,
    w_q: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    method: str = "auto",
) -> torch.Tensor:
    """``x @ W.T + bias`` with int8 per-token activations and int8 per-channel weights.

    ``w_q`` is int8 ``(out, in)``, ``w_scale`` float ``(out,)``. The int32 accumulator is
    rescaled in one step: ``acc * (s_x[:, None] * s_w[None, :]) + bias``. Returns ``x``'s
    dtype, shape ``(*x.shape[:-1], out)``.
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
    x_q, qp_x = quantize_per_token(x, 8)
    acc = int8_matmul(x_q, w_q.t(), method=method)
    scale = qp_x.scale[:, None] * w_scale.float()[None, :]
    out = acc.to(torch.float32).mul_(scale)
    if bias is not None:
        out.add_(bias.float())
    return out.reshape(*x.shape[:-1], out_f).to(x.dtype)


def _dequantize_symmetric(w_q: torch.Tensor, qp: QParams) -> torch.Tensor:
    """``dequantize`` for zero-point-free weights (per channel on axis 0, or per group) in
    two passes (convert, scale in place) and without re-checking the codes: the same float32
    products ``s * q``, bit for bit, about three times faster on a large weight."""
    w = w_q.to(torch.float32)
    if qp.group_size is not None:
        g = qp.group_size
        w.view(w.shape[0], w.shape[1] // g, g).mul_(qp.scale.unsqueeze(-1))
    else:
        w.mul_(qp.scale.reshape(-1, 1) if qp.scale.ndim else qp.scale)
    return w


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
    if not isinstance(qp, QParams):
        raise TypeError(f"{fn}: qp must be a QParams, got {type(qp).__name__}")
    _check_input(x, w_q.shape[1], w_q.device, fn)
    _check_bias(bias, w_q.shape[0], w_q.device, fn)
    fast = (
        not check_codes
        and qp.scale.device == w_q.device
        and (qp.axis in (None, 0) or qp.group_size is not None)
        and not bool(qp.zero_point.any())
    )
    if fast:
        # Same shape checks as dequantize, on the small scale tensor only.
        if qp.group_size is not None:
            expect = (w_q.shape[0], w_q.shape[1] // qp.group_size)
            ok = w_q.shape[1] % qp.group_size == 0 and tuple(qp.scale.shape) == expect
        else:
            ok = qp.scale.numel() == (w_q.shape[0] if qp.axis == 0 else 1)
        fast = ok
    w_hat = _dequantize_symmetric(w_q, qp) if fast else dequantize(w_q, qp)
    return F.linear(x, w_hat.to(x.dtype), None if bias is None else bias.to(x.dtype))


# ---------------------------------------------------------------- nn.Module wrappers


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
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"{fn}: group_size must be a positive int, got {group_size!r}")
    if in_features % group_size:
        raise ValueError(
            f"{fn}: group_size {group_size} must divide in_features ({in_features}); "
            f"choose a divisor of {in_features}"
        )
    return group_size


def _linear_parts(linear: nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None]:
    w = linear.weight.detach().float()
    b = None if linear.bias is None else linear.bias.detach().float().clone()
    return w, b


class _QuantLinear(nn.Module):
    """Shared buffers and checks: ``weight_scale`` (float32), optional ``bias`` (float32)."""

    in_features: int
    out_features: int

    def _init_common(self, weight_scale: torch.Tensor, bias: torch.Tensor | None,
                     device: torch.device, fn: str) -> None:
        check_float_tensor(weight_scale, fn)
        if weight_scale.device != device:
            raise ValueError(f"{fn}: weight_scale is on {weight_scale.device}, codes on {device}")
        _check_bias(bias, self.out_features, device, fn)
        self.register_buffer("weight_scale", weight_scale.detach().to(torch.float32).clone())
        self.register_buffer(
            "bias", None if bias is None else bias.detach().to(torch.float32).clone()
        )

    def _init_int8_per_channel(self, weight_q: torch.Tensor, weight_scale: torch.Tensor,
                               bias: torch.Tensor | None, fn: str) -> None:
        """Int8 codes in [-127, 127] with one scale per output channel (W8A8, fbgemm)."""
        self.out_features, self.in_features = weight_q.shape
        if tuple(weight_scale.shape) != (self.out_features,):
            raise ValueError(
                f"{fn}: weight_scale must have shape ({self.out_features},), "
                f"got {tuple(weight_scale.shape)}"
            )
        _check_codes_in(weight_q, -127, 127, fn)
        self.register_buffer("weight_q", weight_q.detach().clone())
        self._init_common(weight_scale, bias, weight_q.device, fn)
        # A quick QParams round through its checks: scales finite and positive.
        self._weight_qparams(-127, 127, None)

    def _weight_qparams(self, qmin: int, qmax: int, group_size: int | None) -> QParams:
        s = self.weight_scale
        zp = torch.zeros(s.shape, dtype=torch.int32, device=s.device)
        axis = 0 if group_size is None else None
        return QParams(s, zp, qmin, qmax, axis, group_size)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )


class W8A8Linear(_QuantLinear):
    """Int8 weights (per output channel) x int8 activations (per token, dynamic), int32 GEMM."""

    def __init__(
        self,
        weight_q: torch.Tensor,
        weight_scale: torch.Tensor,
        bias: torch.Tensor | None = None,
        *,
        method: str = "auto",
    ) -> None:
        super().__init__()
        fn = "W8A8Linear"
        _check_weight(weight_q, fn)
        if method not in _METHODS:
            raise ValueError(f"{fn}: method must be one of {', '.join(_METHODS)}, got {method!r}")
        self._init_int8_per_channel(weight_q, weight_scale, bias, fn)
        self.method = method

    @classmethod
    def from_float(cls, linear: nn.Linear, *, method: str = "auto") -> W8A8Linear:
        """Quantize ``linear``'s weight symmetrically to int8, one scale per output channel."""
        _check_linear(linear, "W8A8Linear.from_float")
        w, b = _linear_parts(linear)
        qp = symmetric_qparams(w, 8, axis=0)
        return cls(quantize(w, qp), qp.scale, b, method=method)

    def weight_qparams(self) -> QParams:
        """The weights' ``QParams`` (per channel, axis 0, grid ``[-127, 127]``)."""
        return self._weight_qparams(-127, 127, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return w8a8_linear(x, self.weight_q, self.weight_scale, self.bias, method=self.method)


class W8A16Linear(_QuantLinear):
    """Int8 weights (per output channel, or per group of inputs), float activations."""

    def __init__(
        self,
        weight_q: torch.Tensor,
        weight_scale: torch.Tensor,
        bias: torch.Tensor | None = None,
        *,
        group_size: int | None = None,
    ) -> None:
        super().__init__()
        fn = "W8A16Linear"
        _check_weight(weight_q, fn)
        self.out_features, self.in_features = weight_q.shape
        if group_size is not None:
            _check_group_size(group_size, self.in_features, fn)
            expect = (self.out_features, self.in_features // group_size)
        else:
            expect = (self.out_features,)
        if tuple(weight_scale.shape) != expect:
            raise ValueError(
                f"{fn}: weight_scale must have shape {expect}, got {tuple(weight_scale.shape)}"
            )
        _check_codes_in(weight_q, -127, 127, fn)
        self.group_size = group_size
        self.register_buffer("weight_q", weight_q.detach().clone())
        self._init_common(weight_scale, bias, weight_q.device, fn)
        self.weight_qparams()

    @classmethod
    def from_float(cls, linear: nn.Linear, *, group_size: int | None = None) -> W8A16Linear:
        """Quantize ``linear``'s weight to int8: per output channel, or per ``group_size``."""
        fn = "W8A16Linear.from_float"
        _check_linear(linear, fn)
        if group_size is not None:
            _check_group_size(group_size, linear.in_features, fn)
        w, b = _linear_parts(linear)
        if group_size is None:
            qp = symmetric_qparams(w, 8, axis=0)
        else:
            qp = symmetric_qparams(w, 8, group_size=group_size)
        return cls(quantize(w, qp), qp.scale, b, group_size=group_size)

    def weight_qparams(self) -> QParams:
        """The weights' ``QParams`` (grid ``[-127, 127]``)."""
        return self._weight_qparams(-127, 127, self.group_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return weight_only_linear(
            x, self.weight_q, self.weight_qparams(), self.bias, check_codes=False
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + f", group_size={self.group_size}"


class W4A16Linear(_QuantLinear):
    """4-bit weights (symmetric, per group of ``group_size`` inputs), packed two per byte."""

    def __init__(
        self,
        weight_packed: torch.Tensor,
        weight_scale: torch.Tensor,
        bias: torch.Tensor | None = None,
        *,
        in_features: int,
        out_features: int,
        group_size: int = 128,
    ) -> None:
        super().__init__()
        fn = "W4A16Linear"
        if not isinstance(weight_packed, torch.Tensor) or weight_packed.dtype != torch.uint8:
            raise TypeError(f"{fn}: weight_packed must be a uint8 tensor (from pack_bits)")
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{fn}: {name} must be a positive int, got {v!r}")
        self.in_features, self.out_features = in_features, out_features
        _check_group_size(group_size, in_features, fn)
        nbytes = packed_nbytes(in_features * out_features, 4)
        if weight_packed.numel() != nbytes:
            raise ValueError(
                f"{fn}: {out_features}x{in_features} 4-bit codes take {nbytes} bytes, "
                f"got {weight_packed.numel()}"
            )
        expect = (out_features, in_features // group_size)
        if tuple(weight_scale.shape) != expect:
            raise ValueError(
                f"{fn}: weight_scale must have shape {expect}, got {tuple(weight_scale.shape)}"
            )
        self.group_size = group_size
        self.register_buffer("weight_packed", weight_packed.detach().reshape(-1).clone())
        self._init_common(weight_scale, bias, weight_packed.device, fn)
        _check_codes_in(self.unpacked_weight(), -7, 7, fn)
        self.weight_qparams()

    @classmethod
    def from_float(cls, linear: nn.Linear, *, group_size: int = 128) -> W4A16Linear:
        """Quantize ``linear``'s weight to signed 4 bits ``[-7, 7]``, one scale per group."""
        fn = "W4A16Linear.from_float"
        _check_linear(linear, fn)
        _check_group_size(group_size, linear.in_features, fn)
        w, b = _linear_parts(linear)
        qp = symmetric_qparams(w, 4, group_size=group_size)
        packed = pack_bits(quantize(w, qp), 4, signed=True)
        return cls(
            packed, qp.scale, b,
            in_features=linear.in_features, out_features=linear.out_features,
            group_size=group_size,
        )

    def unpacked_weight(self) -> torch.Tensor:
        """The int8 codes, shape ``(out_features, in_features)``."""
        n = self.in_features * self.out_features
        q = unpack_bits(self.weight_packed, 4, n, signed=True)
        return q.view(self.out_features, self.in_features)

    def weight_qparams(self) -> QParams:
        """The weights' per-group ``QParams`` (grid ``[-7, 7]``)."""
        return self._weight_qparams(-7, 7, self.group_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return weight_only_linear(
            x, self.unpacked_weight(), self.weight_qparams(), self.bias, check_codes=False
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + f", group_size={self.group_size}"


# ---------------------------------------------------------------- fbgemm (PyTorch's fast path)


@contextlib.contextmanager
def _quiet_quantized_ops() -> Iterator[None]:
    """Silence the deprecation warnings of PyTorch's quantized-tensor API, here only."""
    with warnings.catch_warnings():
        for cat in (UserWarning, DeprecationWarning, FutureWarning):
            warnings.filterwarnings("ignore", message=r"(?is).*deprecat", category=cat)
        yield


def _fbgemm_engine() -> str | None:
    engines = torch.backends.quantized.supported_engines
    for name in ("x86", "fbgemm"):
        if name in engines:
            return name
    return None


def fbgemm_available() -> bool:
    """Whether this PyTorch build and CPU offer fbgemm's dynamic int8 linear."""
    try:
        ops = torch.ops.quantized
        return (
            _fbgemm_engine() is not None
            and hasattr(ops, "linear_prepack")
            and hasattr(ops, "linear_dynamic")
        )
    except (AttributeError, RuntimeError):
        return False


@contextlib.contextmanager
def _engine(name: str) -> Iterator[None]:
    prev = torch.backends.quantized.engine
    if prev != name:
        torch.backends.quantized.engine = name
    try:
        yield
    finally:
        if prev != name:
            torch.backends.quantized.engine = prev


class FbgemmDynamicLinear(_QuantLinear):
    """The W8A8 layer's int8 weights run by PyTorch's prepacked fbgemm dynamic linear (CPU).

    Activations are quantized inside fbgemm: per tensor, asymmetric, unsigned, 7 bits with
    ``reduce_range=True`` (PyTorch's x86 default), so outputs differ slightly from
    ``W8A8Linear``'s per-token 8-bit ones.
    """

    def __init__(
        self,
        weight_q: torch.Tensor,
        weight_scale: torch.Tensor,
        bias: torch.Tensor | None = None,
        *,
        reduce_range: bool = True,
    ) -> None:
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
        if not isinstance(reduce_range, bool):
            raise TypeError(f"{fn}: reduce_range must be True or False, got {reduce_range!r}")
        self._init_int8_per_channel(weight_q, weight_scale, bias, fn)
        self.reduce_range = reduce_range
        self._pack()

    def _buffers_key(self) -> tuple:
        # Identity and in-place version of every buffer the packed weights were built from:
        # load_state_dict copies into the buffers in place (bumping _version), .to()/.cpu()
        # and assignment replace them (new data_ptr). Either way the pack is stale.
        return tuple(None if t is None else (t.data_ptr(), t._version, t.dtype, tuple(t.shape))
                     for t in (self.weight_q, self.weight_scale, self.bias))

    def _pack(self) -> None:
        zp = torch.zeros(self.out_features, dtype=torch.int64)
        with _quiet_quantized_ops(), _engine(_fbgemm_engine()):
            # fbgemm keeps float32 scales; ours are float32, so float64 here is exact.
            qw = torch._make_per_channel_quantized_tensor(
                self.weight_q.cpu(), self.weight_scale.cpu().double(), zp, 0
            )
            bias = None if self.bias is None else self.bias.cpu()
            self._packed = torch.ops.quantized.linear_prepack(qw, bias)
        self._packed_key = self._buffers_key()

    @classmethod
    def from_float(cls, linear: nn.Linear, *, reduce_range: bool = True) -> FbgemmDynamicLinear:
        """Quantize ``linear`` exactly as ``W8A8Linear.from_float`` does, then prepack it."""
        _check_linear(linear, "FbgemmDynamicLinear.from_float")
        w, b = _linear_parts(linear)
        w, b = w.cpu(), None if b is None else b.cpu()
        qp = symmetric_qparams(w, 8, axis=0)
        return cls(quantize(w, qp), qp.scale, b, reduce_range=reduce_range)

    def weight_qparams(self) -> QParams:
        """The weights' ``QParams`` (per channel, axis 0, grid ``[-127, 127]``)."""
        return self._weight_qparams(-127, 127, None)

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
            _check_codes_in(self.weight_q, -127, 127, fn)
            self._weight_qparams(-127, 127, None)
            self._pack()
        if x2.shape[0] == 0:
            out = x2.new_empty((0, self.out_features))
        else:
            with _quiet_quantized_ops():
                out = torch.ops.quantized.linear_dynamic(x2, self._packed, self.reduce_range)
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", reduce_range={self.reduce_range}"


# ---------------------------------------------------------------- safetensors save / load

_CLASSES = {
    c.__name__: c for c in (W8A8Linear, W8A16Linear, W4A16Linear, FbgemmDynamicLinear)
}


def save_quantized(module: nn.Module, path: str | os.PathLike) -> str:
    """Write a quantized layer to ``path`` as safetensors (no pickle); returns the path.

    Integer codes keep their dtype (int8, or uint8 packed 4-bit), scales and bias are
    float32, and the class and shapes go into the file's string metadata.
    """
    from safetensors.torch import save_file

    fn = "save_quantized"
    name = type(module).__name__
    if _CLASSES.get(name) is not type(module):
        raise TypeError(f"{fn}: expected one of {', '.join(_CLASSES)}, got {name}")
    meta = {
        "format": _FORMAT,
        "class": name,
        "in_features": str(module.in_features),
        "out_features": str(module.out_features),
        "group_size": str(getattr(module, "group_size", None) or ""),
        "method": getattr(module, "method", ""),
        "reduce_range": str(getattr(module, "reduce_range", "")),
    }
    codes = "weight_packed" if isinstance(module, W4A16Linear) else "weight_q"
    tensors = {
        codes: getattr(module, codes),
        "weight_scale": module.weight_scale,
    }
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
            f"{meta.get('format')!r}, expected {_FORMAT!r})"
        )
    name = meta.get("class")
    if name not in _CLASSES:
        raise ValueError(f"{fn}: unknown layer class {name!r} in {path}")
    try:
        in_f, out_f = int(meta["in_features"]), int(meta["out_features"])
        group_size = int(meta["group_size"]) if meta.get("group_size") else None
    except (KeyError, ValueError) as err:
        raise ValueError(f"{fn}: bad or missing shape metadata in {path}: {err}") from None
    codes = "weight_packed" if name == "W4A16Linear" else "weight_q"
    for key in (codes, "weight_scale"):
        if key not in tensors:
            raise ValueError(f"{fn}: {path} has no {key!r} tensor")
    dev = torch.device(device)
    if name == "FbgemmDynamicLinear":
        dev = torch.device("cpu")
    w = tensors[codes].to(dev)
    s = tensors["weight_scale"].to(dev)
    b = tensors["bias"].to(dev) if "bias" in tensors else None
    if name == "W4A16Linear":
        module = W4A16Linear(
            w, s, b, in_features=in_f, out_features=out_f,
            group_size=group_size if group_size is not None else 128,
        )
    else:
        if tuple(w.shape) != (out_f, in_f):
            raise ValueError(
                f"{fn}: codes have shape {tuple(w.shape)}, metadata says {(out_f, in_f)}"
            )
        if name == "W8A8Linear":
            module = W8A8Linear(w, s, b, method=meta.get("method") or "auto")
        elif name == "W8A16Linear":
            module = W8A16Linear(w, s, b, group_size=group_size)
        else:
            module = FbgemmDynamicLinear(w, s, b, reduce_range=meta.get("reduce_range") != "False")
    return module
