"""quantcourse.packing: byte-level unit, property (hypothesis), oracle and bad-input tests."""

from __future__ import annotations

import math
import random

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import quantcourse as qc

BITS = [1, 2, 4, 8]


def grid(bits: int, signed: bool) -> tuple[int, int]:
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


def oracle_pack(values: list[int], bits: int) -> list[int]:
    """Independent reference: a bit string per byte, written out by hand with Python ints.

    Each code becomes its `bits`-character two's complement string (most significant bit
    first); a byte's string is its fields with the first element rightmost (lowest bits).
    """
    per = 8 // bits
    fields = [format(v % (1 << bits), f"0{bits}b") for v in values]
    fields += ["0" * bits] * (-len(fields) % per)
    return [int("".join(reversed(fields[i : i + per])), 2) for i in range(0, len(fields), per)]


def oracle_unpack(data: list[int], bits: int, numel: int, signed: bool) -> list[int]:
    out = []
    for byte in data:
        s = format(byte, "08b")
        for i in range(8 // bits):
            field = s[8 - (i + 1) * bits : 8 - i * bits]
            v = int(field, 2)
            if signed and field[0] == "1":
                v -= 1 << bits
            out.append(v)
    return out[:numel]


def u8(values: list[int], device: str = "cpu") -> torch.Tensor:
    return torch.tensor(values, dtype=torch.uint8, device=device)


# ---------------------------------------------------------------------------- unit


@pytest.mark.parametrize(
    "codes, bits, expected",
    [
        ([1, 2, 3], 4, [0x21, 0x03]),
        ([15, 0, 9, 10], 4, [0x0F, 0xA9]),
        ([3, 0, 1, 2], 2, [0b10_01_00_11]),
        ([1, 2, 3, 0, 3], 2, [0b00_11_10_01, 0b00_00_00_11]),
        ([1, 0, 1, 1, 0, 0, 0, 1], 1, [0b1000_1101]),
        ([1, 1, 0, 0, 0, 0, 0, 0, 1], 1, [0b0000_0011, 0b0000_0001]),
        ([0, 7, 200, 255], 8, [0, 7, 200, 255]),
    ],
)
def test_unsigned_bytes_by_hand(codes, bits, expected, device):
    q = torch.tensor(codes, dtype=torch.uint8, device=device)
    b = qc.pack_bits(q, bits)
    assert b.dtype == torch.uint8 and b.device == q.device and b.ndim == 1
    assert b.tolist() == expected
    assert qc.unpack_bits(b, bits, len(codes)).tolist() == codes


@pytest.mark.parametrize(
    "codes, bits, expected",
    [
        ([-1, 7, -8], 4, [0x7F, 0x08]),
        ([-2, 1, -1, 0], 2, [0b00_11_01_10]),
        ([-1, 0, -1, -1, 0, 0, 0, 0], 1, [0b0000_1101]),
        ([-128, -1, 127], 8, [0x80, 0xFF, 0x7F]),
    ],
)
def test_signed_bytes_by_hand(codes, bits, expected, device):
    q = torch.tensor(codes, dtype=torch.int8, device=device)
    b = qc.pack_bits(q, bits)
    assert b.tolist() == expected
    back = qc.unpack_bits(b, bits, len(codes), signed=True)
    assert back.dtype == torch.int8 and back.device == q.device
    assert back.tolist() == codes


def test_same_bytes_read_signed_or_unsigned():
    b = u8([0x7F, 0x08])
    assert qc.unpack_bits(b, 4, 3).tolist() == [15, 7, 8]
    assert qc.unpack_bits(b, 4, 3).dtype == torch.uint8
    assert qc.unpack_bits(b, 4, 3, signed=True).tolist() == [-1, 7, -8]
    assert qc.unpack_bits(b, 4, 4, signed=True).tolist() == [-1, 7, -8, 0]


def test_input_dtypes_and_shape_are_flattened_in_c_order():
    expected = [0x21, 0x43, 0x65]
    for dtype in (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64):
        q = torch.tensor([[1, 2, 3], [4, 5, 6]], dtype=dtype)
        assert qc.pack_bits(q, 4).tolist() == expected
    # a non-contiguous view is read in its logical (C) order, not its memory order
    qt = torch.tensor([[1, 4], [2, 5], [3, 6]], dtype=torch.int8).t()
    assert not qt.is_contiguous()
    assert qc.pack_bits(qt, 4).tolist() == expected
    assert qc.pack_bits(torch.tensor([True, False, True]), 1).tolist() == [0b101]
    assert qc.pack_bits(torch.tensor(5), 4).tolist() == [5]  # 0-d


def test_eight_bits_is_a_copy_not_a_view():
    q = u8([1, 2, 3])
    b = qc.pack_bits(q, 8)
    b[0] = 99
    assert q.tolist() == [1, 2, 3]
    u = qc.unpack_bits(b, 8, 3)
    u[1] = 77
    assert b.tolist() == [99, 2, 3]


def test_unpack_reads_only_the_first_numel_codes_and_extra_bytes():
    b = u8([0x21, 0x43, 0xFF])
    assert qc.unpack_bits(b, 4, 3).tolist() == [1, 2, 3]
    assert qc.unpack_bits(b.view(1, 3), 4, 5).tolist() == [1, 2, 3, 4, 15]
    assert qc.unpack_bits(b, 2, 0).tolist() == []


def test_explicit_signedness_keyword():
    q = torch.tensor([0, 7, 3], dtype=torch.int8)
    assert qc.pack_bits(q, 4, signed=True).tolist() == qc.pack_bits(q, 4).tolist() == [0x70, 0x03]
    with pytest.raises(ValueError, match=r"1 of 3 .*signed.*\[-8, 7\]"):
        qc.pack_bits(torch.tensor([0, 8, 3]), 4, signed=True)
    with pytest.raises(ValueError, match=r"1 of 2 .*unsigned.*\[0, 15\]"):
        qc.pack_bits(torch.tensor([-1, 3]), 4, signed=False)


def test_empty(device):
    for bits in BITS:
        b = qc.pack_bits(torch.empty(0, 3, dtype=torch.int8, device=device), bits)
        assert b.shape == (0,) and b.dtype == torch.uint8 and b.device.type == device
        for signed, dtype in ((False, torch.uint8), (True, torch.int8)):
            out = qc.unpack_bits(b, bits, 0, signed=signed)
            assert out.shape == (0,) and out.dtype == dtype and out.device.type == device


@pytest.mark.parametrize("bits", BITS)
def test_packed_nbytes(bits):
    for numel in [0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 1000, 10**9 + 1]:
        assert qc.packed_nbytes(numel, bits) == math.ceil(numel * bits / 8)
    for numel in [0, 1, 5, 8, 13, 64]:
        assert qc.pack_bits(torch.zeros(numel, dtype=torch.int8), bits).numel() == math.ceil(
            numel * bits / 8
        )


def test_packed_4bit_weight_is_one_eighth_of_float32_plus_scales(device):
    torch.manual_seed(0)
    w = torch.randn(256, 256, device=device)
    qp = qc.symmetric_qparams(w, 4, axis=0)
    q = qc.quantize(w, qp)
    b = qc.pack_bits(q, 4)
    assert b.numel() * 8 == w.numel() * w.element_size()
    stored = b.numel() + 4 * qp.scale.numel()
    assert stored == qc.quantized_nbytes(w.numel(), qp) == 256 * 256 // 2 + 4 * 256
    back = qc.unpack_bits(b, 4, q.numel(), signed=True).view(q.shape)
    assert torch.equal(back, q)
    assert torch.equal(qc.dequantize(back, qp), qc.dequantize(q, qp))


def test_asymmetric_unsigned_codes_round_trip():
    torch.manual_seed(1)
    w = torch.randn(64, 32)
    for bits in (1, 2, 4, 8):
        qp = qc.asymmetric_qparams(w, bits, axis=0)
        q = qc.quantize(w, qp)
        b = qc.pack_bits(q, bits)
        back = qc.unpack_bits(b, bits, q.numel()).view(q.shape)
        assert torch.equal(back.int(), q.int())


# ---------------------------------------------------------------------------- property


@st.composite
def codes(draw, allow_empty=True):
    bits = draw(st.sampled_from(BITS))
    signed = draw(st.booleans())
    lo, hi = grid(bits, signed)
    values = draw(st.lists(st.integers(lo, hi), min_size=0 if allow_empty else 1, max_size=200))
    return bits, signed, values


def _shape_for(n: int, data) -> tuple[int, ...]:
    divisors = [d for d in range(1, n + 1) if n % d == 0] or [1]
    d = data.draw(st.sampled_from(divisors))
    return (d, n // d) if n else (0, data.draw(st.integers(0, 3)))


@given(codes(), st.data())
def test_round_trip_any_length_and_shape(case, data):
    bits, signed, values = case
    dtype = torch.int8 if signed or bits < 8 else torch.uint8
    q = torch.tensor(values, dtype=dtype).reshape(_shape_for(len(values), data))
    b = qc.pack_bits(q, bits, signed=signed)
    assert b.dtype == torch.uint8 and b.numel() == qc.packed_nbytes(q.numel(), bits)
    back = qc.unpack_bits(b, bits, q.numel(), signed=signed)
    assert back.dtype == (torch.int8 if signed else torch.uint8)
    assert back.reshape(q.shape).tolist() == q.tolist()
    # auto-detected signedness packs the same bytes
    assert torch.equal(qc.pack_bits(q, bits), b)


@given(codes())
def test_pack_order_matches_bit_string_oracle(case):
    bits, signed, values = case
    q = torch.tensor(values, dtype=torch.int64)
    b = qc.pack_bits(q, bits, signed=signed)
    assert b.tolist() == oracle_pack(values, bits)


@given(st.sampled_from(BITS), st.booleans(), st.lists(st.integers(0, 255), max_size=40), st.data())
def test_unpack_matches_bit_string_oracle(bits, signed, data_bytes, data):
    numel = data.draw(st.integers(0, len(data_bytes) * (8 // bits)))
    got = qc.unpack_bits(u8(data_bytes), bits, numel, signed=signed)
    assert got.tolist() == oracle_unpack(data_bytes, bits, numel, signed)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("signed", [False, True])
def test_random_data_against_oracle_and_devices(bits, signed, device):
    rng = random.Random(bits * 2 + signed)
    lo, hi = grid(bits, signed)
    values = [rng.randint(lo, hi) for _ in range(1001)]
    q = torch.tensor(values, dtype=torch.int16, device=device)
    b = qc.pack_bits(q, bits)
    assert b.device == q.device
    assert b.cpu().tolist() == oracle_pack(values, bits)
    back = qc.unpack_bits(b, bits, len(values), signed=signed)
    assert back.device == q.device and back.cpu().tolist() == values


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "values, bits, match",
    [
        ([0, 16, 17, 3], 4, r"2 of 4 value\(s\) do not fit in 4 unsigned bits: the allowed range is \[0, 15\]"),
        ([-1, 8, 0], 4, r"1 of 3 value\(s\) do not fit in 4 signed bits: the allowed range is \[-8, 7\]"),
        ([-9, -8, 7], 4, r"1 of 3 .* 4 signed bits.*\[-8, 7\]"),
        ([2, 0, 1], 1, r"1 of 3 .* 1 unsigned bits.*\[0, 1\]"),
        ([-1, 1], 1, r"1 of 2 .* 1 signed bits.*\[-1, 0\]"),
        ([-3, 0, 2, 5], 2, r"3 of 4 .* 2 signed bits.*\[-2, 1\]"),
        ([256, 0], 8, r"1 of 2 .* 8 unsigned bits.*\[0, 255\]"),
        ([-129, 0], 8, r"1 of 2 .* 8 signed bits.*\[-128, 127\]"),
    ],
)
def test_out_of_range_values_are_counted(values, bits, match, device):
    with pytest.raises(ValueError, match=match):
        qc.pack_bits(torch.tensor(values, dtype=torch.int32, device=device), bits)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64, torch.complex64])
def test_float_input_is_a_type_error(dtype):
    with pytest.raises(TypeError, match="integer tensor"):
        qc.pack_bits(torch.zeros(4, dtype=dtype), 4)


def test_non_tensor_and_unsupported_integer_dtypes():
    with pytest.raises(TypeError, match="torch.Tensor"):
        qc.pack_bits([1, 2, 3], 4)
    with pytest.raises(TypeError, match="int8, uint8"):
        qc.pack_bits(torch.zeros(4, dtype=torch.uint16), 4)
    with pytest.raises(TypeError, match="torch.Tensor"):
        qc.unpack_bits(bytes([1, 2]), 4, 2)
    with pytest.raises(TypeError, match="signed"):
        qc.pack_bits(torch.zeros(4, dtype=torch.int8), 4, signed="yes")


@pytest.mark.parametrize("bits", [0, 3, 5, 6, 7, 16, -4, 4.0, True, "4", None])
def test_unsupported_bits(bits):
    match = r"bits must be one of 1, 2, 4, 8"
    with pytest.raises(ValueError, match=match):
        qc.pack_bits(torch.zeros(4, dtype=torch.int8), bits)
    with pytest.raises(ValueError, match=match):
        qc.unpack_bits(u8([0, 0]), bits, 1)
    with pytest.raises(ValueError, match=match):
        qc.packed_nbytes(4, bits)


def test_numel_too_large_or_invalid():
    with pytest.raises(ValueError, match=r"asked for 5 codes but 2 byte\(s\) hold at most 4 codes of 4 bits"):
        qc.unpack_bits(u8([1, 2]), 4, 5)
    with pytest.raises(ValueError, match=r"at most 16 codes of 1 bits"):
        qc.unpack_bits(u8([1, 2]), 1, 17)
    with pytest.raises(ValueError, match="non-negative"):
        qc.unpack_bits(u8([1, 2]), 4, -1)
    with pytest.raises(ValueError, match="non-negative"):
        qc.packed_nbytes(-1, 4)
    with pytest.raises(TypeError, match="numel must be an int"):
        qc.unpack_bits(u8([1, 2]), 4, 2.0)


@pytest.mark.parametrize("dtype", [torch.int8, torch.int32, torch.float32, torch.bool])
def test_unpack_needs_a_uint8_buffer(dtype):
    with pytest.raises(TypeError, match="expected a uint8 tensor"):
        qc.unpack_bits(torch.zeros(2, dtype=dtype), 4, 2)
