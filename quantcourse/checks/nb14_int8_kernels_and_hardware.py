"""Checkers for the exercises of ``14_int8_kernels_and_hardware.ipynb``."""

from __future__ import annotations

import math
from fractions import Fraction

import torch

from ..hardware import arithmetic_intensity
from ._core import CheckFailed, call, checker, finite_number, fmt_pair, hint_for, passed


def _number(value, what: str, *, integer: bool = False):
    return finite_number(value, what, integer=integer, whole="a whole number of bits")


# ---------------------------------------------------------------- compute-bound batch


def compute_bound_batch_reference(in_features: int, out_features: int, weight_bits: int,
                                  act_bytes: float, ridge: float) -> int | None:
    """Smallest batch whose arithmetic intensity (``qc.arithmetic_intensity``) reaches
    ``ridge``, or None if none does."""
    # 2BKN / (KN w + B (K + N) a) >= r  <=>  B (2KN - r (K + N) a) >= r KN w, in exact
    # fractions so that no float rounding moves the boundary.
    k, n = in_features, out_features
    r, a, w = Fraction(ridge), Fraction(act_bytes), Fraction(weight_bits, 8)
    den = 2 * k * n - r * (k + n) * a
    if den <= 0:
        return None
    return max(1, math.ceil(r * k * n * w / den))


_RIDGE_CASES = [
    # (in_features, out_features, weight_bits, act_bytes, ridge FLOP/byte)
    (4096, 4096, 4, 2, 295.0),     # int4 weights, fp16 activations, a GPU ridge of ~295
    (1024, 1024, 32, 4, 10.0),     # fp32 layer on a CPU whose ridge is 10 FLOP/byte
    (1024, 1024, 8, 4, 10.0),      # the same layer with int8 weights
    (4096, 4096, 16, 2, 295.0),    # the same in fp16
    (1024, 1024, 32, 4, 0.25),     # batch 1 already reaches the ridge
    (384, 1536, 8, 1, 37.5),       # W8A8 in a MiniLM feed-forward layer
    (384, 1536, 32, 4, 200.0),     # never: the intensity tends to 2KN / ((K+N) a) = 153.6
]


def _ridge_hint(got, case: tuple) -> str:
    k, n, wb, ab, r = case
    want = compute_bound_batch_reference(*case)
    if want is None:
        return (f"no batch reaches {r} FLOP/byte: as the batch grows the intensity tends to "
                f"2KN / ((K+N) act_bytes) = {2 * k * n / ((k + n) * ab):.4g}, below the ridge; "
                "return None in that case")
    if got is None:
        return "this layer does reach the ridge at some batch: return that batch, not None"
    cands = {
        "count FLOPs, not multiply-accumulates: each MAC is 2 FLOPs":
            compute_bound_batch_reference(k, n, wb, ab, 2 * r),
        "weight_bits are bits: divide by 8 to get bytes":
            compute_bound_batch_reference(k, n, wb * 8, ab, r),
        "count the activation traffic too: batch * (in + out) * act_bytes":
            max(1, math.ceil(r * k * n * wb / 8 / (2 * k * n))),
        "return the first batch AT or above the ridge, not the last one below it": want - 1,
    }
    if isinstance(got, int) and got >= 1:
        at = arithmetic_intensity(got, k, n, wb, ab)
        side = "below" if at < r else "already at or above"
        default = (f"at your batch {got} the intensity is {at:.5g} FLOP/byte "
                   f"(qc.arithmetic_intensity), {side} the ridge {r}; return the smallest B >= 1 "
                   "with intensity(B) >= ridge")
    else:
        default = ("intensity(B) = 2BKN / (KN weight_bits/8 + B (K+N) act_bytes); return the "
                   "smallest B >= 1 with intensity(B) >= ridge")
    return hint_for(got, cands, default=default)


@checker
def check_compute_bound_batch(answer) -> None:
    """``answer(in, out, weight_bits, act_bytes, ridge)`` -> smallest compute-bound batch."""
    for case in _RIDGE_CASES:
        k, n, wb, ab, r = case
        what = (f"compute_bound_batch(in_features={k}, out_features={n}, weight_bits={wb}, "
                f"act_bytes={ab}, ridge={r})")
        got = call(answer, *case, what=what)
        want = compute_bound_batch_reference(*case)
        if got is not None:
            got = _number(got, what, integer=True)
            got = int(got)
        if got != want:
            shown = "None" if want is None else f"batch {want}"
            raise CheckFailed(f"{what}: expected {shown}, got {got}. "
                              f"Hint: {_ridge_hint(got, case)}")
    passed(f"compute-bound batches are right on {len(_RIDGE_CASES)} layers (fp32, int8 and int4 "
           "weights, a CPU and a GPU ridge point, and a layer that never gets there)")


# ---------------------------------------------------------------- accumulator width


def _code_range(bits: int, signed: bool) -> tuple[int, int]:
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


def _product_range(a_bits: int, a_signed: bool, b_bits: int, b_signed: bool) -> tuple[int, int]:
    """Smallest and largest product of two codes: by brute force over every pair of codes up to
    8 bits (the case the corners must agree with), from the range's corners above."""
    (alo, ahi), (blo, bhi) = _code_range(a_bits, a_signed), _code_range(b_bits, b_signed)
    if a_bits <= 8 and b_bits <= 8:
        a = torch.arange(alo, ahi + 1, dtype=torch.int64)
        b = torch.arange(blo, bhi + 1, dtype=torch.int64)
        prod = a[:, None] * b[None, :]
        return int(prod.min()), int(prod.max())
    corners = [p * q for p in (alo, ahi) for q in (blo, bhi)]
    return min(corners), max(corners)


def _bits_for(lo: int, hi: int) -> int:
    """Fewest bits of a two's-complement integer holding every value in ``[lo, hi]``."""
    bits = 1
    while not -(2 ** (bits - 1)) <= lo <= hi <= 2 ** (bits - 1) - 1:
        bits += 1
    return bits


def accumulator_bits_reference(a_bits: int, a_signed: bool, b_bits: int, b_signed: bool,
                               k: int) -> int:
    """Fewest accumulator bits for any sum of ``k`` products of the two kinds of codes."""
    lo, hi = _product_range(a_bits, a_signed, b_bits, b_signed)
    return _bits_for(k * lo, k * hi)


_ACC_CASES = [
    # (a_bits, a_signed, b_bits, b_signed, k)
    (8, True, 8, True, 131071),    # section 1's bound: int32 exactly
    (8, True, 8, True, 131072),    # one more product: 2^31 does not fit
    (8, False, 8, False, 1),       # u8 x u8: 65025 needs 17 bits
    (8, False, 8, True, 2),        # a vpmaddubsw pair of u8 x s8 products: not int16
    (7, False, 8, True, 2),        # with 7-bit activations it fits int16
    (8, False, 8, True, 4),        # a vpdpbusd group of four
    (8, False, 8, True, 258),      # the negative side (255 * -128) decides
    (4, True, 4, True, 511),       # int4 x int4: (-8)(-8) = 64 per product
    (4, True, 4, True, 512),       # 512 * 64 = 32768: one bit more than int16
    (2, True, 8, True, 1),         # a 2-bit weight [-2, 1] by int8: (-2)(-128) = 256
    (1, False, 1, False, 1000),    # binary {0, 1} codes: a popcount
    (16, True, 16, True, 1),       # int16 x int16: (-32768)^2 = 2^30
]


def _acc_hint(got, case: tuple) -> str:
    ab, asg, bb, bsg, k = case
    want = accumulator_bits_reference(*case)
    lo, hi = _product_range(ab, asg, bb, bsg)

    def narrow(bits, signed):          # -(2^(b-1) - 1) instead of -2^(b-1)
        lo_, hi_ = _code_range(bits, signed)
        return (lo_ + 1 if signed else lo_, hi_)

    (nlo_a, nhi_a), (nlo_b, nhi_b) = narrow(ab, asg), narrow(bb, bsg)
    ncorners = [p * q for p in (nlo_a, nhi_a) for q in (nlo_b, nhi_b)]
    slo, shi = _product_range(ab, True, bb, True)
    cands = [
        (f"the sum can also be negative, down to k * {lo}: the accumulator must hold that too",
         _bits_for(0, k * hi)),
        ("a signed code goes down to -2^(bits-1), not -(2^(bits-1) - 1): the largest product "
         f"here is {hi}", _bits_for(k * min(ncorners), k * max(ncorners))),
        ("an unsigned code goes up to 2^bits - 1 (255 for 8 bits), not 2^(bits-1) - 1",
         _bits_for(k * slo, k * shi)),
        ("a w-bit two's-complement integer holds at most 2^(w-1) - 1 (and at least -2^(w-1))",
         _bits_for(k * lo, k * hi - 1)),
        ("the rule of thumb a_bits + b_bits + ceil(log2 k) is only an upper bound: size the "
         f"worst case, here products in [{lo}, {hi}]",
         ab + bb + math.ceil(math.log2(k)) if k > 1 else ab + bb),
    ]
    return hint_for(got, cands, want=want,
                    default=f"the products lie in [{lo}, {hi}], so k of them in "
                            f"[{k * lo}, {k * hi}]: count the bits a two's-complement integer "
                            "needs for both ends")


@checker
def check_accumulator_bits(answer) -> None:
    """``answer(a_bits, a_signed, b_bits, b_signed, k)`` -> accumulator bits."""
    for case in _ACC_CASES:
        ab, asg, bb, bsg, k = case
        what = (f"accumulator_bits(a_bits={ab}, a_signed={asg}, b_bits={bb}, b_signed={bsg}, "
                f"k={k})")
        got = _number(call(answer, *case, what=what), what, integer=True)
        got = int(got)
        want = accumulator_bits_reference(*case)
        if got != want:
            lo, hi = _product_range(ab, asg, bb, bsg)
            raise CheckFailed(f"{what}: expected {want} bits, got {got} (the worst sums are "
                              f"{k * lo:,} and {k * hi:,}). Hint: {_acc_hint(got, case)}")
    passed(f"accumulator widths right on {len(_ACC_CASES)} cases: a u8 x s8 pair needs 17 bits "
           "(vpmaddubsw has 16, so it saturates), a 7-bit one fits 16, and 512 int4 x int4 "
           "products need 17")


# ---------------------------------------------------------------- memory-bound speed-up


def predicted_speedup_reference(in_features: int, out_features: int, bytes_per_weight: float,
                                batch: int) -> float:
    """Bytes moved by float32 ``nn.Linear`` over bytes moved by a layer reading
    ``bytes_per_weight`` per weight; both read the float32 bias and input, write the output."""
    k, n = in_features, out_features
    shared = 4 * n + 4 * batch * (k + n)
    return (4 * k * n + shared) / (bytes_per_weight * k * n + shared)


_SPEEDUP_CASES = [
    # (in_features, out_features, bytes_per_weight, batch)
    (4096, 4096, 2.0, 1),          # W8A16 / W4A16 on fbgemm's fp16 GEMM
    (4096, 4096, 1.0, 1),          # int8 weights
    (4096, 4096, 0.5, 1),          # a fused int4 kernel
    (4096, 4096, 4.0, 1),          # float32 itself: no speed-up
    (4096, 4096, 17.5, 1),         # W4A16 dequantized in plain PyTorch: a slow-down
    (1024, 1024, 2.0, 64),         # a batch: the activations' bytes weigh in
    (384, 1536, 1.0, 16),          # a MiniLM feed-forward layer at 16 tokens
    (1024, 1024, 0.5, 256),
]


def _speedup_hint(got: float, case: tuple) -> str:
    k, n, bpw, b = case
    want = predicted_speedup_reference(*case)
    shared = 4 * n + 4 * b * (k + n)
    cands = [
        ("the speed-up is float32's bytes over the quantized layer's, not the other way round",
         1 / want),
        ("count the bias, input and output bytes too (float32, in both layers): "
         "4 N + 4 B (K + N)", 4 / bpw),
        ("the input (B x K) and output (B x N) grow with the batch: multiply by batch",
         (4 * k * n + 4 * n + 4 * (k + n)) / (bpw * k * n + 4 * n + 4 * (k + n))),
        ("the float32 layer reads 4 bytes per weight, not 4 bits",
         (0.5 * k * n + shared) / (bpw * k * n + shared)),
    ]
    return hint_for(got, cands, rtol=1e-6, want=want,
                    default="memory-bound: time ~ bytes, so the speed-up is (4 K N + shared) / "
                            "(bytes_per_weight K N + shared) with shared = 4 N + 4 B (K + N)")


@checker
def check_predicted_speedup(answer) -> None:
    """``answer(in_features, out_features, bytes_per_weight, batch)`` -> predicted speed-up."""
    for case in _SPEEDUP_CASES:
        k, n, bpw, b = case
        what = (f"predicted_speedup(in_features={k}, out_features={n}, "
                f"bytes_per_weight={bpw}, batch={b})")
        got = float(_number(call(answer, *case, what=what), what))
        want = predicted_speedup_reference(*case)
        if not math.isclose(got, want, rel_tol=1e-6):
            g, w = fmt_pair(got, want)
            raise CheckFailed(f"{what}: expected {w}x, got {g}x. Hint: {_speedup_hint(got, case)}")
    w2, w1 = (predicted_speedup_reference(4096, 4096, b, 1) for b in (2.0, 1.0))
    passed(f"predicted speed-ups right on {len(_SPEEDUP_CASES)} layers. The 4096 x 4096 layer at "
           f"batch 1: {w2:.2f}x with 2 bytes per weight, {w1:.2f}x with 1; now compare with "
           "section 3.2's measured batch-1 row")
