"""Checkers for the exercises of ``06_bit_widths_and_packing.ipynb``."""

from __future__ import annotations

import functools
import math
import numbers

import torch

from ..affine import symmetric_qparams
from ..data import digits_data
from ..metrics import quantized_nbytes
from ..models import digits_cnn
from ..nn import quantize_model_weights
from ._core import CheckFailed, as_tensor, call, checker, fmt, hint_for, passed

# --------------------------------------------------------------------------- 3-bit packing


def _pack3_reference(codes: torch.Tensor) -> torch.Tensor:
    """Brute force: write the stream bit by bit, code i's bit j at stream bit 3i + j."""
    c = codes.reshape(-1).to(torch.int64) & 0b111
    bits = ((c[:, None] >> torch.arange(3)) & 1).reshape(-1)           # stream, lowest first
    bits = torch.cat([bits, bits.new_zeros(-bits.numel() % 8)]).reshape(-1, 8)
    return (bits << torch.arange(8)).sum(dim=1).to(torch.uint8)


def _unpack3_reference(packed: torch.Tensor, n: int) -> torch.Tensor:
    bits = ((packed.to(torch.int64)[:, None] >> torch.arange(8)) & 1).reshape(-1)[: 3 * n]
    c = (bits.reshape(n, 3) << torch.arange(3)).sum(dim=1)
    return torch.where(c >= 4, c - 8, c)


def _pack3_cases() -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(63)
    fc1 = digits_cnn().fc1.weight.detach()
    q_fc1 = torch.round(fc1 * (3 / fc1.abs().amax(dim=1, keepdim=True))).to(torch.int8)
    return [
        ("every code once, [-4, ..., 3] (8 codes, 3 bytes)", torch.arange(-4, 4)),
        ("a single code [-1]", torch.tensor([-1])),
        ("three codes [3, -4, 1]", torch.tensor([3, -4, 1])),
        ("13 random codes", torch.randint(-4, 4, (13,), generator=g)),
        ("40 random codes (int8)", torch.randint(-4, 4, (40,), generator=g, dtype=torch.int8)),
        ("the digits CNN's fc1 at 3 bits (64 x 512 codes, flattened)", q_fc1.reshape(-1)),
    ]


def _pack3_hint(got: torch.Tensor, codes: torch.Tensor) -> str:
    c = codes.to(torch.int64)
    return hint_for(got, [
        ("mask each code to the low 3 bits of its two's complement (c & 0b111) before "
         "shifting: a negative code otherwise sets every bit above its own",
         lambda: _unmasked(c)),
        ("lowest bits first: code i's bit j is stream bit 3i + j, and stream bit t is bit "
         "t % 8 of byte t // 8 (not the most significant bit first)", lambda: _msb_first(c)),
    ], default="code i occupies stream bits 3i, 3i + 1, 3i + 2 (lowest first); stream bit t "
       "is bit t % 8 of byte t // 8; negative codes as the low 3 bits of two's complement, "
       "unused bits of the last byte 0")


def _msb_first(c: torch.Tensor) -> torch.Tensor:
    """A big-endian bit stream: each code's top bit first, each byte filled from bit 7 down."""
    bits = (((c & 0b111)[:, None] >> torch.tensor([2, 1, 0])) & 1).reshape(-1)
    bits = torch.cat([bits, bits.new_zeros(-bits.numel() % 8)]).reshape(-1, 8)
    return (bits << torch.arange(7, -1, -1)).sum(dim=1)


def _unmasked(c: torch.Tensor) -> torch.Tensor:
    """What OR-ing unmasked (sign-extended) codes into a 24-bit word gives, byte by byte."""
    c = torch.cat([c, c.new_zeros(-c.numel() % 8)]).reshape(-1, 8)
    word = torch.zeros(c.shape[0], dtype=torch.int64)
    for i in range(8):
        word = word | (c[:, i] << (3 * i))
    out = torch.stack([(word >> (8 * k)) & 0xFF for k in range(3)], dim=1).reshape(-1)
    return out[: math.ceil(3 * c.numel() / 8)]


@checker
def check_pack_3bit(answer) -> None:
    """``answer(codes)`` packs signed 3-bit codes as one bit stream, lowest bits first."""
    cases = _pack3_cases()
    for label, codes in cases:
        what = f"pack_3bit on {label}"
        got = as_tensor(call(answer, codes.clone(), what=what), what)
        if got.is_floating_point() or got.is_complex() or got.dtype == torch.bool:
            raise CheckFailed(f"{what}: expected an integer tensor of bytes (uint8), got "
                              f"{got.dtype}")
        got = got.reshape(-1).to(torch.int64)
        want = _pack3_reference(codes).to(torch.int64)
        n = codes.numel()
        if got.numel() != want.numel():
            if got.numel() in (math.ceil(n / 2), n):
                hint = (f"3 bits per code: {n} codes take ceil(3 x {n} / 8) = {want.numel()} "
                        "bytes; padding each code to 4 bits (or one code per byte) is the "
                        "wasteful layout this exercise replaces")
            elif got.numel() == 3 * math.ceil(n / 8):
                hint = (f"trim the padding of the last group: {n} codes need only "
                        f"ceil(3 x {n} / 8) = {want.numel()} bytes")
            else:
                hint = f"{n} codes of 3 bits take ceil(3 x {n} / 8) = {want.numel()} bytes"
            raise CheckFailed(f"{what}: expected {want.numel()} byte(s), got {got.numel()}. "
                              f"Hint: {hint}")
        if int(got.min()) < 0 or int(got.max()) > 255:
            raise CheckFailed(f"{what}: bytes must lie in [0, 255], got values in "
                              f"[{int(got.min())}, {int(got.max())}]. Hint: mask each code to "
                              "its low 3 bits (c & 0b111) and each byte to 8 bits (& 0xFF)")
        if not torch.equal(got, want):
            k = int((got != want).nonzero()[0])
            raise CheckFailed(f"{what}: {int((got != want).sum())} of {want.numel()} byte(s) "
                              f"differ; byte {k} expected {int(want[k]):08b}, got "
                              f"{int(got[k]):08b}. Hint: {_pack3_hint(got, codes)}")
        if not torch.equal(_unpack3_reference(got, n), codes.to(torch.int64)):
            raise CheckFailed(f"{what}: the bytes do not unpack to the codes")
    passed(f"your bytes match a bit-by-bit reference on {len(cases)} inputs and unpack to the "
           "same codes; the CNN's fc1 takes 12,288 bytes at 3 bits, against 16,384 padded to 4")


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


# --------------------------------------------------------------------------- smallest bit width

_BITS = range(2, 9)


def _agreement_table(granularity: str = "channel", against: str = "fp32") -> dict[int, float]:
    return dict(_table(granularity, against))


@functools.lru_cache(maxsize=4)
def _table(granularity: str, against: str) -> tuple[tuple[int, float], ...]:
    """Agreement by bit width on the 360 test images, up to the first width that agrees on
    all of them (that width meets every threshold up to 1)."""
    cnn = digits_cnn().eval()
    data = digits_data()
    out = []
    with torch.no_grad():
        ref = cnn(data.x_test).argmax(dim=1) if against == "fp32" else data.y_test
        for b in _BITS:
            qmodel = quantize_model_weights(cnn, b, granularity=granularity)
            out.append((b, float((qmodel(data.x_test).argmax(dim=1) == ref).double().mean())))
            if out[-1][1] == 1.0:
                break
    return tuple(out)


def _smallest(table: dict[int, float], thr: float, *, strict: bool = False) -> int | None:
    return next((b for b, a in table.items() if (a > thr if strict else a >= thr)), None)


@checker
def check_smallest_bits(answer) -> None:
    """``answer(model, images, threshold)`` -> the smallest bit width whose per-channel
    weights keep the top-1 agreement with the float model at or above ``threshold``."""
    cnn = digits_cnn().eval()
    images = digits_data().x_test
    table = _agreement_table()
    thresholds = (1.0, 0.99)
    got_all = []
    for thr in thresholds:
        what = f"smallest_bits(digits CNN, the 360 test images, threshold={thr})"
        got = call(answer, cnn, images.clone(), thr, what=what)
        if isinstance(got, torch.Tensor) and got.numel() == 1 and not got.is_floating_point():
            got = int(got)
        if isinstance(got, numbers.Integral) and not isinstance(got, bool):
            got = int(got)
        if got is not None and (isinstance(got, bool) or not isinstance(got, int)):
            raise CheckFailed(f"{what}: expected a bit width (an int from 2 to 8) or None, got "
                              f"{type(got).__name__} {fmt(got) if isinstance(got, float) else ''}"
                              ". Hint: return the bit width, not its agreement")
        got_all.append(got)
    wants = [_smallest(table, t) for t in thresholds]
    if got_all != wants:
        variants = [
            ("agreement is measured against the float model's own predictions on the same "
             "images, not against the labels (that would be accuracy)",
             lambda: [_smallest(_agreement_table(against="labels"), t) for t in thresholds]),
            ("quantize per output channel (qc.quantize_model_weights' default), not per tensor",
             lambda: [_smallest(_agreement_table("tensor"), t) for t in thresholds]),
            ("'at or above the threshold': use >=, so that an agreement of exactly 1.0 meets "
             "threshold 1.0", lambda: [_smallest(table, t, strict=True) for t in thresholds]),
        ]
        hint = next((h for h, v in variants if v() == got_all), "for b = 2, 3, ..., 8 quantize "
                    "the weights with qc.quantize_model_weights(model, b), compare the arg-max "
                    "of its logits with the float model's, and return the first b whose "
                    "agreement >= threshold")
        i = next(i for i, (g, w) in enumerate(zip(got_all, wants, strict=True)) if g != w)
        shown = ", ".join(f"{b}: {a:.4f}" for b, a in table.items())
        raise CheckFailed(f"smallest_bits(digits CNN, the 360 test images, threshold="
                          f"{thresholds[i]}): expected {wants[i]}, got {got_all[i]} (agreement "
                          f"by bits: {shown}). Hint: {hint}")
    passed("your choices match at thresholds 1.0 and 0.99: "
           + " and ".join(f"{_smallest(table, t)} bits" for t in (1.0, 0.99))
           + f"; 4 bits already agrees with float32 on {table[4]:.1%} of the test images")
