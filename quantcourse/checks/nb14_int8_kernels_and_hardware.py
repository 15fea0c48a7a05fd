"""Checkers for the exercises of ``14_int8_kernels_and_hardware.ipynb``."""

from __future__ import annotations

import math
import numbers
from fractions import Fraction

import torch

from ..hardware import ENERGY_PJ
from ._core import CheckFailed, call, checker, hint_for, passed


def _number(value, what: str, *, integer: bool = False):
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        kind = "an integer" if integer else "a number"
        raise CheckFailed(f"{what}: expected {kind}, got {type(value).__name__}")
    if integer and not float(value).is_integer():
        raise CheckFailed(f"{what}: expected a whole number of bits, got {value!r}")
    if not math.isfinite(float(value)):
        raise CheckFailed(f"{what}: expected a finite number, got {value!r}")
    return value


# ---------------------------------------------------------------- accumulator bits


def accumulator_bits_reference(k: int, bits_x: int, bits_w: int) -> int:
    """Smallest signed accumulator width that holds any sum of ``k`` full-range products."""
    # The largest magnitude a sum can reach: k products of the two most negative codes,
    # (-2^(bx-1)) * (-2^(bw-1)) = 2^(bx+bw-2), all positive. A signed n-bit integer holds up
    # to 2^(n-1) - 1, so n - 1 must be at least the bit length of that sum.
    return (k * 2 ** (bits_x + bits_w - 2)).bit_length() + 1


_ACC_CASES = [
    (1, 8, 8),          # one product: 2^14 needs 16 bits
    (3, 8, 8),          # not a power of two: the log2 shortcut is a bit too generous
    (4, 8, 8),          # exactly 2^16
    (768, 8, 8),        # a MiniLM hidden size
    (1_025, 8, 8),      # k * 2^14 just above 2^24, while k * 127^2 stays below it
    (131_071, 8, 8),    # the largest K an int32 accumulator takes (qc.int8_matmul's limit)
    (131_072, 8, 8),    # one more and int32 overflows
    (1_000, 8, 4),      # W4A8
    (4_096, 4, 4),      # W4A4
]


_ACC_MISTAKES = [  # (hint, the mistaken formula)
    ("you left out the sign bit: a signed n-bit integer holds at most 2^(n-1) - 1, so "
     "n = bit_length(largest sum) + 1",
     lambda k, bx, bw: (k * 2 ** (bx + bw - 2)).bit_length()),
    ("the most negative codes are -2^(b-1) (-128 for int8), and (-128) * (-128) = 2^14 is the "
     "largest product: use 2^(bits_x-1) * 2^(bits_w-1), not 127 * 127",
     lambda k, bx, bw: (k * (2 ** (bx - 1) - 1) * (2 ** (bw - 1) - 1)).bit_length() + 1),
    ("ceil(log2(largest sum)) falls one short when the sum is an exact power of two (2^14 "
     "needs 15 bits of magnitude, log2 gives 14): use (largest sum).bit_length() + 1",
     lambda k, bx, bw: math.ceil(math.log2(k * 2 ** (bx + bw - 2))) + 1),
    ("bits_x + bits_w + ceil(log2 K) is a safe bound but not the smallest width: the largest "
     "product is 2^(bits_x+bits_w-2), not 2^(bits_x+bits_w-1)",
     lambda k, bx, bw: bx + bw + math.ceil(math.log2(k))),
    ("one bit more than needed: the largest sum k * 2^(bits_x+bits_w-2) fits in fewer",
     lambda k, bx, bw: accumulator_bits_reference(k, bx, bw) + 1),
]


def _acc_hint(answers: list[int]) -> str:
    """Name the mistake whose formula reproduces every answer (the whole pattern, not one case)."""
    mistakes = [(hint, [formula(*case) for case in _ACC_CASES]) for hint, formula in _ACC_MISTAKES]
    return hint_for(answers, mistakes,
                    default="the largest sum is k * 2^(bits_x-1) * 2^(bits_w-1) (all products "
                            "of the two most negative codes); n = its bit length + 1 for the sign")


@checker
def check_int8_accumulator_bits(answer) -> None:
    """``answer(k, bits_x, bits_w)``: bits of a signed accumulator for ``k`` products."""
    answers = []
    for k, bx, bw in _ACC_CASES:
        what = f"accumulator_bits(k={k}, bits_x={bx}, bits_w={bw})"
        answers.append(int(_number(call(answer, k, bx, bw, what=what), what, integer=True)))
    for got, (k, bx, bw) in zip(answers, _ACC_CASES, strict=True):
        want = accumulator_bits_reference(k, bx, bw)
        if got != want:
            what = f"accumulator_bits(k={k}, bits_x={bx}, bits_w={bw})"
            raise CheckFailed(f"{what}: expected {want} bits, got {got}. "
                              f"Hint: {_acc_hint(answers)}")
    passed(f"accumulator widths are right on {len(_ACC_CASES)} cases, including the int32 "
           "limit K = 131071 that qc.int8_matmul enforces")


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
    return hint_for(got, cands,
                    default="intensity(B) = 2BKN / (KN weight_bits/8 + B (K+N) act_bytes); "
                            "return the smallest B >= 1 with intensity(B) >= ridge")


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


# ---------------------------------------------------------------- energy estimate


def energy_reference(macs: int, weight_bytes: int, fmt: str) -> float:
    """Estimated microjoules for ``macs`` multiply-accumulates plus weights read from DRAM."""
    h = ENERGY_PJ
    mac = (h["fp32_mult"] + h["fp32_add"]) if fmt == "fp32" else (h["int8_mult"]
                                                                   + h["int32_add"])
    dram_per_byte = h["dram_read_32bit"] / 4
    return (macs * mac + weight_bytes * dram_per_byte) * 1e-6


_ENERGY_CASES = [
    (337_536, 151_080, "fp32"),
    (337_536, 38_770, "int8"),
    (170_016_768, 42_587_136, "fp32"),
    (170_016_768, 10_819_584, "int8"),
    (1_000, 0, "int8"),            # compute only
    (0, 4_096, "fp32"),            # traffic only
]


def _energy_hint(got: float, case: tuple) -> str:
    macs, nbytes, fmt = case
    h = ENERGY_PJ
    want = energy_reference(*case)
    dram = h["dram_read_32bit"] / 4
    mac = (h["fp32_mult"] + h["fp32_add"]) if fmt == "fp32" else (h["int8_mult"]
                                                                   + h["int32_add"])
    cands = {
        "return microjoules: 1 uJ = 10^6 pJ, so multiply the picojoules by 1e-6":
            want * 1e6,
        "1 uJ = 10^6 pJ: you scaled by 1e-12 (joules?) or 1e-3": want * 1e-6,
        "the DRAM figure is per 32-bit read (4 bytes): divide 640 pJ by 4 for one byte":
            (macs * mac + nbytes * h["dram_read_32bit"]) * 1e-6,
        "the int8 MAC accumulates into 32 bits: use the 32-bit integer add (0.1 pJ), not "
        "the 8-bit add (0.03 pJ)": (macs * (h["int8_mult"] + h["int8_add"])
                                    + nbytes * dram) * 1e-6,
        "add the weight traffic: every weight byte is read from DRAM once (640 pJ per 32 "
        "bits)": macs * mac * 1e-6,
        "add the arithmetic: each MAC costs a multiply plus an add": nbytes * dram * 1e-6,
        "a MAC is a multiply AND an add: you counted only the multiply":
            (macs * (h["fp32_mult"] if fmt == "fp32" else h["int8_mult"])
             + nbytes * dram) * 1e-6,
        "weights come from DRAM here (640 pJ per 32 bits), not from the 8 KB SRAM (5 pJ)":
            (macs * mac + nbytes * h["sram_read_32bit_8kb"] / 4) * 1e-6,
    }
    return hint_for(got, cands, rtol=1e-6, atol=1e-15,
                    default="energy = macs * (mult + add) + weight_bytes * 640 / 4, in pJ, "
                            "times 1e-6 for uJ; fp32: 3.7 + 0.9 pJ per MAC, int8: 0.2 + 0.1 pJ "
                            "(32-bit accumulation)")


@checker
def check_energy_estimate(answer) -> None:
    """``answer(macs, weight_bytes, fmt)`` -> estimated microjoules (Horowitz, 45 nm)."""
    for case in _ENERGY_CASES:
        macs, nbytes, fmt = case
        what = f"energy_uj(macs={macs:,}, weight_bytes={nbytes:,}, fmt={fmt!r})"
        got = float(_number(call(answer, *case, what=what), what))
        want = energy_reference(*case)
        if not math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-12):
            raise CheckFailed(f"{what}: expected {want:.6g} uJ, got {got:.6g}. "
                              f"Hint: {_energy_hint(got, case)}")
    passed(f"energy estimates are right on {len(_ENERGY_CASES)} cases (fp32 and int8, the "
           "digits CNN and MiniLM, compute-only and traffic-only)")
