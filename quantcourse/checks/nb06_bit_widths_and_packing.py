"""Checkers for the exercises of ``06_bit_widths_and_packing.ipynb``."""

from __future__ import annotations

import math
import numbers

import torch

from ..affine import symmetric_qparams
from ..metrics import quantized_nbytes
from ..packing import pack_bits
from ._core import (
    CheckFailed,
    as_tensor,
    call,
    checker,
    expect_close,
    expect_equal,
    fmt,
    hint_for,
    narrow_qmax,
    passed,
)

# --------------------------------------------------------------------------- packing nibbles


def _nibble_cases() -> list[tuple[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(6)
    return [
        ("the three codes [1, 2, 3] (odd length)", torch.tensor([1, 2, 3])),
        ("the four codes [0, 15, 10, 5]", torch.tensor([0, 15, 10, 5])),
        ("64 random codes", torch.randint(0, 16, (64,), generator=gen)),
        ("9 random codes (odd length)", torch.randint(0, 16, (9,), generator=gen)),
        ("a single code [12]", torch.tensor([12])),
    ]


def _nibble_hint(got: torch.Tensor, codes: torch.Tensor) -> str:
    c = codes.to(torch.int64)
    if c.numel() % 2:
        c = torch.cat([c, c.new_zeros(1)])
    lo, hi = c[0::2], c[1::2]
    g = got.detach().to(torch.int64)
    if torch.equal(g, (lo << 4) | hi):
        return ("the first code of each pair goes in the LOW nibble (bits 0-3) and the second "
                "in the high nibble: byte = first | (second << 4)")
    right = lo | (hi << 4)
    if codes.numel() % 2 and torch.equal(g[:-1], right[:-1]):
        return ("the last byte holds the odd code out in its low nibble, with zero padding "
                "in its high nibble")
    return "byte k = codes[2k] | (codes[2k+1] << 4), and an odd length is padded with 0"


@checker
def check_pack_nibbles(answer) -> None:
    """``answer(codes)`` packs unsigned 4-bit codes two per byte, first code in the low nibble."""
    for label, codes in _nibble_cases():
        what = f"packed bytes of {label}"
        got = as_tensor(call(answer, codes.clone(), what=what), what)
        if got.is_floating_point() or got.is_complex() or got.dtype == torch.bool:
            raise CheckFailed(
                f"{what}: expected an integer tensor of bytes (uint8), got {got.dtype}"
            )
        got = got.reshape(-1) if got.ndim > 1 else got
        want = pack_bits(codes, 4)
        n = codes.numel()
        if got.numel() != want.numel():
            if got.numel() == n // 2:
                hint = (f"{n} codes need ceil({n} / 2) = {want.numel()} bytes: pad an odd "
                        "length with a zero nibble instead of dropping the last code")
            elif got.numel() == n:
                hint = "two 4-bit codes share each byte: you stored one code per byte"
            else:
                hint = f"{n} codes of 4 bits take ceil({n} / 2) = {want.numel()} bytes"
            raise CheckFailed(
                f"{what}: expected {want.numel()} byte(s), got {got.numel()}. Hint: {hint}"
            )
        if got.numel() and (int(got.min()) < 0 or int(got.max()) > 255):
            raise CheckFailed(
                f"{what}: bytes must lie in [0, 255], got values in [{int(got.min())}, "
                f"{int(got.max())}]. Hint: OR two 4-bit fields together, first | (second << 4)"
            )
        expect_equal(got, want, what, hint=_nibble_hint(got, codes))
    passed(
        "your bytes match qc.pack_bits(codes, 4) for even and odd lengths, first code in the "
        "low nibble"
    )


# --------------------------------------------------------------------------- storage bytes

# (rows, cols, bits, group_size): per channel (group_size None) and per group.
_STORAGE_CASES = [
    (1536, 384, 4, None),
    (384, 1536, 4, 128),
    (64, 512, 8, None),
    (7, 9, 3, None),
    (5, 5, 2, None),
    (4, 12, 3, 4),
    (1, 1, 4, None),
]


def _storage_reference(rows: int, cols: int, bits: int, group_size: int | None) -> int:
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(rows * 1000 + cols))
    if group_size is None:
        qp = symmetric_qparams(w, bits, axis=0)
    else:
        qp = symmetric_qparams(w, bits, group_size=group_size)
    return quantized_nbytes(w.numel(), qp)


def _storage_hint(got: float, rows: int, cols: int, bits: int, group_size: int | None) -> str:
    numel = rows * cols
    n_scales = rows if group_size is None else rows * (cols // group_size)
    payload = math.ceil(numel * bits / 8)
    variants = [
        (payload, "add the scales: one float32 (4 bytes) per "
                  + ("row" if group_size is None else "group")),
        (numel * bits // 8 + 4 * n_scales,
         f"round the packed bytes UP: {numel} x {bits} bits = {numel * bits} bits need "
         f"ceil({numel * bits} / 8) = {payload} bytes (a partly filled byte is still a byte)"),
        (payload + 2 * n_scales, "each scale is a float32: 4 bytes, not 2"),
        (payload + 4, f"there are {n_scales} scales (one per "
                      + ("row" if group_size is None else "group of every row")
                      + "), not one per tensor"),
        (numel * bits + 4 * n_scales,
         "the payload is numel x bits BITS: divide by 8 bits per byte"),
        (numel + 4 * n_scales, f"pack the codes: {bits} bits each, not one byte each"),
    ]
    if group_size is not None:
        variants.append((payload + 4 * (cols // group_size),
                         f"one scale per group in EVERY row: {rows} x {cols // group_size} "
                         f"= {n_scales} scales"))
        variants.append((payload + 4 * rows,
                         f"per group means {cols // group_size} scales per row, "
                         f"{n_scales} in all, not one per row"))
    return hint_for(got, [(hint, value) for value, hint in variants],
                    default="ceil(rows * cols * bits / 8) bytes of codes + 4 bytes per scale")


@checker
def check_storage_bytes(answer) -> None:
    """``answer(rows, cols, bits, group_size)`` -> bytes of packed codes plus float32 scales."""
    for rows, cols, bits, group_size in _STORAGE_CASES:
        gran = "per channel (one scale per row)" if group_size is None else \
            f"per group of {group_size}"
        what = f"stored bytes of a {rows} x {cols} weight at {bits} bits, {gran}"
        got = call(answer, rows, cols, bits, group_size, what=what)
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if isinstance(got, bool) or not isinstance(got, numbers.Real):
            raise CheckFailed(f"{what}: expected a number of bytes, got {type(got).__name__}")
        want = _storage_reference(rows, cols, bits, group_size)
        if float(got) != want:
            hint = _storage_hint(float(got), rows, cols, bits, group_size)
            shown = f"{float(got):.0f}" if float(got).is_integer() else fmt(float(got))
            raise CheckFailed(f"{what}: expected {want} bytes, got {shown}. Hint: {hint}")
    passed(
        "your byte counts match qc.quantized_nbytes per channel and per group at 2, 3, 4 and "
        "8 bits, odd sizes included"
    )


# --------------------------------------------------------------------------- the SQNR rule

# (bits, extra_bits)
_GAIN_CASES = [(8, 1), (4, 4), (2, 1), (3, 2), (5, 0), (2, 6)]


def _gain_reference(bits: int, extra: int) -> float:
    return 20.0 * math.log10(narrow_qmax(bits + extra) / narrow_qmax(bits))


def _gain_hint(got: float, bits: int, extra: int) -> str:
    variants = [
        (20 * math.log10(2) * extra,
         "6.02 dB per bit is the many-bit limit; on the narrow grid the step is max|x| / qmax "
         f"and qmax goes from {narrow_qmax(bits)} to {narrow_qmax(bits + extra)}: "
         "use the ratio of the qmax"),
        (6.0 * extra, "6 dB per bit is only the many-bit limit (and 20 log10 2 is 6.02); use "
                      "the ratio of the two qmax"),
        (10 * math.log10(narrow_qmax(bits + extra) / narrow_qmax(bits)),
         "noise power is s^2 / 12, so the power ratio is the SQUARE of the step ratio: "
         "20 log10, not 10 log10"),
        (20 * math.log10((2 ** (bits + extra) - 1) / (2**bits - 1)),
         "the step is max|x| / qmax with qmax = 2^(b-1) - 1 (the narrow grid's largest code), "
         "not the number of levels 2^b - 1"),
        (20 * math.log10(2 ** (bits + extra - 1) / 2 ** (bits - 1)),
         "qmax = 2^(b-1) - 1, not 2^(b-1)"),
        (20 * math.log(narrow_qmax(bits + extra) / narrow_qmax(bits)),
         "decibels use log10, not the natural log"),
        (-_gain_reference(bits, extra), "more bits give a smaller step and a HIGHER SQNR: "
                                         "the gain is positive"),
    ]
    return hint_for(got, [(hint, value) for value, hint in variants], rtol=1e-6, atol=1e-6,
                    want=_gain_reference(bits, extra),
                    default="gain = 20 log10(qmax(b + k) / qmax(b)) with qmax(b) = 2^(b-1) - 1")


@checker
def check_sqnr_rule(answer) -> None:
    """``answer(bits, extra_bits)`` -> predicted SQNR gain in dB on the narrow symmetric grid."""
    for bits, extra in _GAIN_CASES:
        what = f"SQNR gain from {bits} to {bits + extra} bits"
        got = call(answer, bits, extra, what=what)
        t = as_tensor(got, what)
        if t.numel() != 1 or t.is_complex():
            raise CheckFailed(f"{what}: expected one real number (dB), got shape {tuple(t.shape)}")
        g = float(t)
        want = _gain_reference(bits, extra)
        hint = _gain_hint(g, bits, extra) if math.isfinite(g) else \
            "the gain is a finite number of dB"
        # 6.02 for 20 log10(2) is fine (2e-4 relative); 6.0 is not.
        expect_close(torch.tensor(g), torch.tensor(want), what, rtol=2e-4, atol=1e-6, hint=hint)
    passed(
        "your predicted gains match 20 log10(qmax(b + k) / qmax(b)): 9.54 dB from 2 to 3 bits, "
        "6.09 dB from 7 to 8, tending to 6.02 dB per bit"
    )
