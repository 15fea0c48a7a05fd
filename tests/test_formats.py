"""quantcourse.formats: float layouts against torch.finfo, bit fields, fixed point."""

from __future__ import annotations

import struct

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import quantcourse as qc

FLOATS = [torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", FLOATS)
def test_layout_derived_ranges_match_torch_finfo(dtype):
    info, fi = qc.format_info(dtype), torch.finfo(dtype)
    assert info["bits"] == fi.bits
    assert info["max"] == fi.max
    assert info["min_normal"] == fi.smallest_normal
    assert info["eps"] == fi.eps
    assert info["min_subnormal"] == float(torch.nextafter(torch.zeros(1, dtype=dtype),
                                                        torch.ones(1, dtype=dtype)))


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8, torch.int16, torch.int32])
def test_integer_ranges_match_torch_iinfo(dtype):
    info, ii = qc.format_info(dtype), torch.iinfo(dtype)
    assert (info["min"], info["max"], info["bits"]) == (ii.min, ii.max, ii.bits)


def test_fp32_fields_match_struct_bits():
    for v in [1.0, -2.5, 0.1, 3.4e38, 1e-40, 0.0]:
        raw = struct.unpack(">I", struct.pack(">f", v))[0]
        d = qc.decompose_float(torch.tensor([v]))
        assert int(d["sign"]) == raw >> 31
        assert int(d["exponent"]) == (raw >> 23) & 0xFF
        assert int(d["mantissa"]) == raw & 0x7FFFFF
        assert d["bits"][0].replace("|", "") == f"{raw:032b}"


@pytest.mark.parametrize("dtype", FLOATS)
@given(st.floats(allow_nan=False, allow_infinity=True, width=32))
def test_compose_inverts_decompose(dtype, v):
    d = qc.decompose_float(torch.tensor([v]), dtype)
    back = qc.compose_float(d["sign"], d["exponent"], d["mantissa"], dtype)
    assert torch.equal(back, d["value"])


def test_nan_is_composed_as_nan():
    d = qc.decompose_float(torch.tensor([float("nan")]))
    assert bool(torch.isnan(qc.compose_float(d["sign"], d["exponent"], d["mantissa"])).all())


def test_decompose_rejects_unknown_dtype_and_integers():
    with pytest.raises(ValueError, match="is not one of"):
        qc.decompose_float(torch.tensor([1.0]), torch.float64)
    with pytest.raises(TypeError, match="floating-point"):
        qc.decompose_float(torch.tensor([1]))
    with pytest.raises(ValueError, match="unsupported dtype"):
        qc.format_info(torch.bool)


def test_fixed_point_known_values():
    # Q3.4: 1 sign bit, 3 integer bits, 4 fraction bits: step 1/16, range [-8, 8 - 1/16]
    x = torch.tensor([0.3, -1.7, 100.0, -100.0, 0.03125, 0.09375])
    q = qc.to_fixed(x, 3, 4)
    # 0.3*16 = 4.8 -> 5; -27.2 -> -27; saturate at 127 / -128; 0.5 -> 0 and 1.5 -> 2 (ties even)
    assert q.tolist() == [5, -27, 127, -128, 0, 2]
    assert qc.from_fixed(q, 3, 4).tolist() == [5 / 16, -27 / 16, 127 / 16, -8.0, 0.0, 0.125]
    assert qc.to_fixed(torch.tensor([-1.0, 300.0]), 7, 1, signed=False).tolist() == [0, 255]


@given(st.integers(0, 7), st.integers(0, 8), st.lists(st.floats(-300, 300, width=32), min_size=1))
def test_fixed_point_error_is_half_a_step_inside_the_range(m, n, values):
    if m + n + 1 > 16 or m + n + 1 < 2:
        return
    x = torch.tensor(values)
    lo, hi = -(2.0**m), 2.0**m - 2.0**-n
    inside = (x >= lo) & (x <= hi)
    err = (qc.from_fixed(qc.to_fixed(x, m, n), m, n) - x).abs()
    assert bool((err[inside] <= 2.0 ** -(n + 1) + 1e-6 * x.abs()[inside]).all())


def test_fixed_point_bad_formats():
    with pytest.raises(ValueError, match="int_bits"):
        qc.fixed_qparams(-1, 3)
    with pytest.raises(ValueError, match="total width"):
        qc.fixed_qparams(10, 10)
