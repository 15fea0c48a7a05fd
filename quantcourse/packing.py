"""Pack and unpack 1-, 2- and 4-bit integers into bytes.

Introduced in ``06_bit_widths_and_packing.ipynb``.

Layout (DESIGN section 4): the codes are flattened in C order and taken in groups of
``8 // bits``; element ``i`` of a group goes into bits ``[i*bits, (i+1)*bits)`` of its byte
(first element in the lowest bits). A length that does not fill the last byte is padded with
zero bits, and ``unpack_bits`` takes the original length back. ``bits=8`` is a plain byte copy,
so that every width goes through the same two calls.

Signed codes are stored as the low ``bits`` bits of their two's complement, so a signed
4-bit ``-1`` is stored as ``0b1111`` and unpacked with ``signed=True`` back to ``-1``.
``pack_bits`` decides signedness from the data unless told (``signed=None``): if any code is
negative the codes are signed and must lie in ``[-2^(bits-1), 2^(bits-1) - 1]``, otherwise they
are unsigned and must lie in ``[0, 2^bits - 1]``. The bytes do not record which was used:
``unpack_bits`` needs ``signed=`` to sign-extend.

Example::

    >>> pack_bits(torch.tensor([1, 2, 3]), 4).tolist()          # [0x21, 0x03]
    [33, 3]
    >>> unpack_bits(torch.tensor([0x7F, 0x08], dtype=torch.uint8), 4, 3, signed=True).tolist()
    [-1, 7, -8]

Everything is vectorised PyTorch and runs on the tensor's own device (CPU or CUDA).
"""

from __future__ import annotations

import torch

from ._validate import check_bits_in, check_bool, check_int

__all__ = ["pack_bits", "unpack_bits", "packed_nbytes"]

SUPPORTED_BITS = (1, 2, 4, 8)
# PyTorch's uint16/32/64 lack the reductions used here (aminmax), so they are refused.
_CODE_DTYPES = (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64, torch.bool)


def _check_bits(bits: object, fn: str) -> int:
    return check_bits_in(bits, SUPPORTED_BITS, fn, why=" (widths that divide a byte)")


def packed_nbytes(numel: int, bits: int) -> int:
    """Bytes that ``numel`` values of ``bits`` bits take once packed: ``ceil(numel*bits/8)``."""
    fn = "packed_nbytes"
    bits = _check_bits(bits, fn)
    numel = check_int(numel, "numel", fn, minimum=0)
    return -(-numel * bits // 8)


def _signed_range(bits: int) -> tuple[int, int]:
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def _unsigned_range(bits: int) -> tuple[int, int]:
    return 0, 2**bits - 1


def pack_bits(q: torch.Tensor, bits: int, *, signed: bool | None = None) -> torch.Tensor:
    """Pack integer codes of ``bits`` bits (1, 2 or 4; 8 is a plain copy) into a flat uint8 tensor.

    ``q`` is an integer tensor (bool counts as unsigned 0/1) of any shape, flattened in C order.
    ``signed=None`` (default) treats the codes as signed if any is negative and as unsigned
    otherwise; ``True`` or ``False`` force the range check. Returns
    ``packed_nbytes(q.numel(), bits)`` bytes on ``q``'s device.
    """
    fn = "pack_bits"
    if not isinstance(q, torch.Tensor):
        raise TypeError(f"{fn}: expected a torch.Tensor, got {type(q).__name__}")
    if q.dtype not in _CODE_DTYPES:
        raise TypeError(
            f"{fn}: expected an integer tensor of codes (the output of quantize) of dtype "
            f"int8, uint8, int16, int32, int64 or bool, got {q.dtype}"
        )
    bits = _check_bits(bits, fn)
    if signed is not None and not isinstance(signed, bool):
        raise TypeError(f"{fn}: signed must be True, False or None, got {signed!r}")
    numel = q.numel()
    nbytes = packed_nbytes(numel, bits)
    if numel == 0:
        return torch.empty(0, dtype=torch.uint8, device=q.device)
    flat = q.reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)

    lo_seen, hi_seen = (int(v) for v in torch.aminmax(flat))
    if signed is None:
        signed = lo_seen < 0
    lo, hi = _signed_range(bits) if signed else _unsigned_range(bits)
    if lo_seen < lo or hi_seen > hi:
        n_bad = int(((flat < lo) | (flat > hi)).sum())
        kind = "signed" if signed else "unsigned"
        raise ValueError(
            f"{fn}: {n_bad} of {numel} value(s) do not fit in {bits} {kind} bits: "
            f"the allowed range is [{lo}, {hi}], got values in [{lo_seen}, {hi_seen}]"
        )

    # Casting to uint8 wraps modulo 256, which keeps the two's complement bit pattern of a
    # negative code; the mask then keeps its low `bits` bits.
    codes = flat.to(torch.uint8)
    if bits == 8:
        # A uint8 input comes back as a view of itself: copy, so the bytes never alias q.
        return codes.clone() if codes.data_ptr() == q.data_ptr() else codes
    codes = codes & (2**bits - 1)
    per = 8 // bits
    if numel % per:
        padded = torch.zeros(nbytes * per, dtype=torch.uint8, device=q.device)
        padded[:numel] = codes
        codes = padded
    groups = codes.view(nbytes, per)
    # One vectorised step per field of the byte (at most 8), not per element: the fields
    # occupy disjoint bits, so OR-ing them in builds each byte.
    out = groups[:, 0].clone()
    for i in range(1, per):
        out |= groups[:, i] << (i * bits)
    return out


def unpack_bits(b: torch.Tensor, bits: int, numel: int, *, signed: bool = False) -> torch.Tensor:
    """Inverse of ``pack_bits``: the first ``numel`` codes, int8 if ``signed`` else uint8.

    ``b`` is a uint8 tensor (any shape, read flattened); it may hold more bytes than needed.
    Signed codes are sign-extended from ``bits`` bits. The result is flat and on ``b``'s
    device; reshape it to the original shape.
    """
    fn = "unpack_bits"
    if not isinstance(b, torch.Tensor):
        raise TypeError(f"{fn}: expected a torch.Tensor, got {type(b).__name__}")
    if b.dtype != torch.uint8:
        raise TypeError(
            f"{fn}: expected a uint8 tensor of packed bytes (from pack_bits), got {b.dtype}"
        )
    bits = _check_bits(bits, fn)
    numel = check_int(numel, "numel", fn, minimum=0)
    check_bool(signed, "signed", fn)
    per = 8 // bits
    capacity = b.numel() * per
    if numel > capacity:
        raise ValueError(
            f"{fn}: asked for {numel} codes but {b.numel()} byte(s) hold at most {capacity} "
            f"codes of {bits} bits"
        )
    out_dtype = torch.int8 if signed else torch.uint8
    if numel == 0:
        return torch.empty(0, dtype=out_dtype, device=b.device)
    nbytes = packed_nbytes(numel, bits)
    flat = b.reshape(-1)[:nbytes]
    if bits == 8:
        out = flat.clone()
    else:
        out = torch.empty(nbytes, per, dtype=torch.uint8, device=b.device)
        for i in range(per):  # one vectorised step per field of the byte
            torch.bitwise_and(flat >> (i * bits), 2**bits - 1, out=out[:, i])
        out = out.view(-1)[:numel]
    if not signed:
        return out
    if bits == 8:
        return out.view(torch.int8)
    # Sign-extend: move the field's sign bit to bit 7, reinterpret as int8, and let the
    # arithmetic right shift copy the sign bit back down.
    return ((out << (8 - bits)).view(torch.int8) >> (8 - bits)).contiguous()
