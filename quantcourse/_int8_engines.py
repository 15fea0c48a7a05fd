"""fbgemm's packed GEMMs as engines for the course's layers (x86 CPUs, with or without VNNI).

Two engines: the u8 x s8 GEMM as an exact integer engine (below), and the fp16-weight GEMM
run on integer weight codes (``prepack_fp16``, ``matmul_fp16``), the weight-only layers'
fast CPU path: codes up to 2048 in magnitude are exact in float16, so fbgemm computes
``x @ codes.T`` in float32 from 2 bytes per weight, and the layer applies its scales after.

Introduced in ``14_int8_kernels_and_hardware.ipynb`` (``kernels.int8_matmul`` and
``qlinear.W8A8Linear`` run on it where ``int8_matmul_path()`` says ``"fbgemm"``); readers can
skip it. The op is ``torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32``: it
quantizes a float input with a given scale and zero point to uint8, multiplies by prepacked
int8 weights and returns float32. Fed integer-valued floats with scale 1 and weights with
unit scales, it computes ``float32(sum_k a[m, k] * w[n, k])`` with the sum in int32:

* the input codes ``a`` become ``u = a + zero_point`` exactly (integers, scale 1), and fbgemm
  subtracts ``zero_point * sum_k w[n, k]`` in int32 again;
* without VNNI, fbgemm adds each pair of u8 x s8 products into a saturating int16
  (``vpmaddubsw``). With ``u <= 127`` a pair is at most ``2 * 127 * 128 = 32512``, so no pair
  saturates: 7-bit codes ``[-64, 63]`` (zero point 64) are exact on every x86 CPU, 8-bit codes
  (zero point 128) only where the probe ``exact_bits()`` finds VNNI's exact int32 sums.

So the result is exact as an int32 wherever ``|sum| <= 2^24`` (float32 holds every integer up
to there), and equal to ``acc.to(torch.float32)`` always. It shares ``engines``' helpers
(engine choice, quiet warnings) and imports nothing else of ours.
"""

from __future__ import annotations

import os

import torch

from .engines import _engine, _fbgemm_engine, _quiet_quantized_ops

_OP = "linear_with_input_q_dq_qweight_dq_output_fp32"
# Codes of ``bits`` bits are shifted by this zero point into uint8.
ZERO_POINT = {7: 64, 8: 128}
_PROBE: dict[str, int | None] = {}


def available() -> bool:
    """Whether this PyTorch build offers fbgemm's packed linear with a float32 output."""
    try:
        ops = torch.ops.quantized
        return _fbgemm_engine() is not None and hasattr(ops, "linear_prepack") \
            and hasattr(ops, _OP)
    except (AttributeError, RuntimeError):
        return False


def prepack(w: torch.Tensor) -> object:
    """Pack int8 weights ``(N, K)`` (unit scales, zero points 0, no bias) for ``matmul_codes``."""
    n = w.shape[0]
    with _quiet_quantized_ops(), _engine(_fbgemm_engine()):
        qw = torch._make_per_channel_quantized_tensor(
            w.contiguous(), torch.ones(n, dtype=torch.float64),
            torch.zeros(n, dtype=torch.int64), 0)
        return torch.ops.quantized.linear_prepack(qw, None)


def matmul_codes(codes: torch.Tensor, packed: object, bits: int) -> torch.Tensor:
    """``float32(codes @ W.T)`` for integer-valued float32 ``codes`` ``(M, K)`` in the signed
    ``bits``-bit range (``bits`` 7 or 8, see ``exact_bits``) and ``packed = prepack(W)``.

    Called bare, for speed at small batches: the op warns of nothing (building quantized
    tensors, in ``prepack``, does), so it runs outside ``_quiet_quantized_ops``, whose
    ``catch_warnings`` costs about 30 us; and through its ``.default`` overload, which skips
    the overload packet's Python dispatch (about 35 us with a packed-weights argument).
    """
    return _op().default(codes, 1.0, ZERO_POINT[bits], packed)


def _op():
    return getattr(torch.ops.quantized, _OP)


# ---------------------------------------------------------------- fp16-weight GEMM on codes

_FP16_OPS = ("linear_prepack_fp16", "linear_dynamic_fp16")


def fp16_available() -> bool:
    """Whether this build offers fbgemm's fp16-weight GEMM (float32 in, float32 out)."""
    try:
        ops = torch.ops.quantized
        return _fbgemm_engine() is not None and all(hasattr(ops, n) for n in _FP16_OPS)
    except (AttributeError, RuntimeError):
        return False


def prepack_fp16(codes: torch.Tensor) -> object:
    """Pack integer weight codes ``(N, K)`` (|code| <= 2048: every one exact in float16) for
    ``matmul_fp16``. The pack holds 2 bytes per weight."""
    with _quiet_quantized_ops(), _engine(_fbgemm_engine()):
        return torch.ops.quantized.linear_prepack_fp16(codes.float().contiguous(), None)


def matmul_fp16(x2: torch.Tensor, packed: object) -> torch.Tensor:
    """``x2 @ codes.T`` for float32 ``x2`` ``(M, K)`` and ``packed = prepack_fp16(codes)``.

    fbgemm widens each float16 weight to float32 in registers and multiplies-adds in float32:
    the product of the float32 input and the exact integer codes, rounded as any float32
    GEMM rounds, reading 2 bytes per weight instead of 4 (bare ``.default`` call, as above).
    """
    return torch.ops.quantized.linear_dynamic_fp16.default(x2, packed)


def exact_bits() -> int | None:
    """The widest signed code width (8 or 7) this machine's fbgemm multiplies exactly, or None.

    fbgemm picks its kernel from the CPU and ``FBGEMM_ENABLE_INSTRUCTIONS``; probe once per
    setting with the worst cases (largest uint8 codes against +-127 and -128 weights).
    """
    key = os.environ.get("FBGEMM_ENABLE_INSTRUCTIONS", "")
    if key not in _PROBE:
        _PROBE[key] = None
        if available():
            w = torch.full((16, 64), 127, dtype=torch.int8)
            w[8:] = -128
            w[4:8, ::2] = -127
            for bits in (8, 7):
                hi = 2 ** (bits - 1) - 1
                a = torch.full((4, 64), float(hi))
                a[2:] = -(hi + 1)
                a[1, ::2] = -(hi + 1)
                want = (a.double() @ w.double().T).float()
                try:
                    ok = torch.equal(matmul_codes(a, prepack(w), bits), want)
                except RuntimeError:
                    ok = False
                if ok:
                    _PROBE[key] = bits
                    break
    return _PROBE[key]


# ---------------------------------------------------------------- exact int32 GEMM


def _chunk(bits: int) -> int:
    # |a| <= 2^(bits-1), |w| <= 128: chunks of K whose sums stay within 2^24 (exact in float32).
    return 2**24 // (2 ** (bits - 1) * 128)


class _Cache:
    """The packed chunks of the last ``b`` multiplied, reused while ``b`` is unchanged.

    Keyed on ``b``'s storage, offset, shape, strides and version counter (bumped by every
    in-place write); the entry holds a reference to ``b``, so its memory cannot be reused by
    another tensor while cached. Inference-mode tensors have no version counter: not cached.
    """

    entry: tuple | None = None        # (key, b, packs), replaced as one object

    @classmethod
    def packs_for(cls, b: torch.Tensor, bits: int) -> list:
        try:
            key = (b.untyped_storage().data_ptr(), b.storage_offset(), tuple(b.shape),
                   b.stride(), b._version, bits)
        except RuntimeError:
            key = None
        entry = cls.entry
        if key is not None and entry is not None and entry[0] == key:
            return entry[2]
        wt = b.t()                                        # (N, K)
        step = _chunk(bits)
        packs = [prepack(wt[:, k:k + step]) for k in range(0, b.shape[0], step)]
        if key is not None:
            cls.entry = (key, b, packs)
        return packs


def int8_matmul(a: torch.Tensor, b: torch.Tensor, bits: int) -> torch.Tensor:
    """Exact ``(M, K) int8 @ (K, N) int8 -> int32`` on fbgemm whose exact width is ``bits``.

    Codes that fit ``bits`` go in one pass; others are split as ``a = 2 * (a >> 1) + (a & 1)``,
    both parts 7-bit, and the two products combined in int32.
    """
    hi = 2 ** (bits - 1) - 1
    lo_a, hi_a = (int(v) for v in torch.aminmax(a))
    if lo_a < -(hi + 1) or hi_a > hi:
        half = torch.bitwise_right_shift(a, 1)
        return int8_matmul(half, b, bits).mul_(2).add_(int8_matmul(a - half * 2, b, bits))
    af = a.float()
    step = _chunk(bits)
    out = None
    for i, packed in enumerate(_Cache.packs_for(b, bits)):
        part = matmul_codes(af[:, i * step:(i + 1) * step].contiguous(), packed, bits)
        part = part.to(torch.int32)
        out = part if out is None else out.add_(part)
    return out
