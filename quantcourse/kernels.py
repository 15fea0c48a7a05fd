"""Int8 GEMM: the fastest exact ``int8 @ int8 -> int32`` product on this machine.

Introduced in ``14_int8_kernels_and_hardware.ipynb``; the quantized linear layers built on
it are in ``qlinear``, fbgemm's engine in ``engines``.

* ``int8_matmul(a, b)``: ``(M, K) int8 @ (K, N) int8 -> (M, N) int32``, exact. The path
  depends on the device (``int8_matmul_path`` says which one ``method="auto"`` takes):

  - CUDA: ``torch._int_mm`` (cuBLASLt int8 tensor cores). It rejects ``M <= 16`` and ``K`` or
    ``N`` that are not multiples of 8, so such shapes are padded with zeros (zeros add
    nothing to a dot product) and the result is sliced back.
  - CPU with AVX-512 VNNI and oneDNN enabled: ``torch._int_mm``, which PyTorch then routes to
    oneDNN's VNNI int8 GEMM (on the course machine: 2.4-2.8x faster than a float32 matmul at
    512x4096x4096, about even at batch 1).
  - x86 CPU without VNNI (or with oneDNN capped below it): fbgemm's packed u8 x s8 GEMM
    (``_int8_engines``), fed codes that fit 7 bits so that no int16 pair sum can saturate
    (wider codes are split as ``2 * (a >> 1) + (a & 1)``, two exact passes). ``K`` is cut into
    chunks whose sums stay within ``2^24``, each packed once and cached while ``b`` is
    unchanged (one entry). ``int8_activation_bits()`` is then 7: the activation grid
    ``W8A8Linear`` uses to run in one pass. ``W8A8Linear`` packs its weights once and runs
    fbgemm on VNNI CPUs too (8-bit codes, exact there): ``int8_matmul_path(prepacked=True)``.
  - any other CPU (arm64, builds without fbgemm): ``torch._int_mm`` is a scalar reference
    loop there (15x slower than float32 at 1x4096x4096, 300x at 64x4096x4096), so the
    product is computed in float32 instead, which is exact by
    construction: every product of two int8 values has ``|p| <= 2^14``, so a sum over at
    most 1024 of them is an integer ``<= 2^24`` and every float32 partial sum of it is exact,
    whatever order the BLAS adds in. ``K`` is cut into blocks of 1024; each block's float32
    result is converted to int32 and the blocks are added in int32.

  Every path computes the same integers. ``K`` is limited to 131071 so that no int32
  accumulator can overflow (``131071 * 128 * 128 < 2^31``).
* ``int8_matmul_reference(a, b)``: the same product in float64 on the CPU (exact for any
  ``K`` allowed here, since every partial sum stays far below ``2^53``), for checks.

Example::

    >>> int8_matmul(torch.ones(2, 3, dtype=torch.int8), torch.ones(3, 5, dtype=torch.int8))[0, 0]
    tensor(3, dtype=torch.int32)
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator

import torch

from . import _int8_engines as _fb
from ._validate import check_choice

__all__ = ["int8_matmul", "int8_matmul_reference", "int8_matmul_path", "int8_activation_bits"]

# Largest K for which no int8 x int8 dot product can overflow an int32 accumulator:
# K * (-128) * (-128) <= 2^31 - 1.
MAX_K = (2**31 - 1) // (128 * 128)
# Float32 represents every integer up to 2^24 exactly; 1024 products of at most 2^14 each
# stay within it, so a float32 matmul over 1024 inputs is an exact integer computation.
_FLOAT_BLOCK = 1024
# Cap on the float32 partial results the block path holds at once (elements; 64 MiB).
_PARTIALS_CAP = 1 << 24
# The exact paths ``int8_matmul`` (and the W8A8 layers) can be asked for.
METHODS = ("auto", "int_mm", "fbgemm", "float")


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


def int8_matmul_path(device: str | torch.device = "cpu", *, prepacked: bool = False) -> str:
    """Which exact path ``int8_matmul(method="auto")`` takes on ``device``.

    Returns ``"int_mm"`` (``torch._int_mm``: cuBLASLt on CUDA, oneDNN VNNI on CPU),
    ``"fbgemm"`` (fbgemm's u8 x s8 GEMM; x86 without VNNI, exact on 7-bit codes) or
    ``"float"`` (float32 blocks of 1024 along K, added in int32).

    ``prepacked=True`` answers for a ``b`` packed once and reused (a layer's weights, as
    ``W8A8Linear`` does): fbgemm then wins on every x86 CPU where it is exact, VNNI included,
    since ``_int_mm`` reorders its operand on every call (measured: 0.4-0.8x fbgemm's speed
    at batch 1-64 on a Zen 4 with VNNI, against 0.9-1.05x with the packed weights).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return "int_mm"
    if device.type != "cpu":
        return "float"
    fbgemm = _fb.exact_bits() is not None
    if prepacked and fbgemm:
        return "fbgemm"
    if _cpu_int_mm_is_fast():
        return "int_mm"
    return "fbgemm" if fbgemm else "float"


def int8_activation_bits(device: str | torch.device = "cpu", method: str = "auto") -> int:
    """The widest signed activation codes (8 or 7 bits) that a W8A8 layer with ``method`` runs
    in one exact pass on ``device``: 7 where its path is fbgemm without VNNI, else 8.

    ``W8A8Linear`` quantizes its activations to this grid (``act_bits``) unless told otherwise.
    """
    check_choice(method, "method", METHODS, "int8_activation_bits")
    if method == "auto":
        method = int8_matmul_path(device, prepacked=True)
    if method == "fbgemm" and torch.device(device).type == "cpu":
        return _fb.exact_bits() or 8
    return 8


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
    ``"int_mm"`` (``torch._int_mm``, padded on CUDA), ``"fbgemm"`` (x86 CPU only) or
    ``"float"`` (float32 blocks).
    """
    fn = "int8_matmul"
    check_choice(method, "method", METHODS, fn)
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
    if method == "fbgemm":
        bits = _fb.exact_bits() if a.device.type == "cpu" else None
        if bits is None:
            raise RuntimeError(
                f"{fn}: method='fbgemm' needs a CPU tensor and a PyTorch build whose fbgemm "
                f"engine multiplies exactly (a is on {a.device}); use method='auto'"
            )
        return _fb.int8_matmul(a, b, bits)
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
