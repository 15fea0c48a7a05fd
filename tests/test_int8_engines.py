"""quantcourse._int8_engines: fbgemm's u8 x s8 GEMM as an exact int32 engine (unit, property,
oracle against an int64 matmul). Its non-VNNI case runs under the emulation in
tests/test_int8_path.py (and in `make test-portable`)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from quantcourse import _int8_engines as E
from quantcourse import kernels as K
from tests.int8_cases import FBGEMM_BITS, rand_int8
from tests.oracles import oracle_int64

needs_engine = pytest.mark.skipif(FBGEMM_BITS is None, reason="no exact fbgemm engine here")


def test_probe_finds_a_width_and_is_remembered_per_setting(monkeypatch):
    assert FBGEMM_BITS in (None, 7, 8)
    if FBGEMM_BITS is not None:
        assert E.available()
    monkeypatch.setattr(E, "_PROBE", {"": 7, "AVX2": None})
    monkeypatch.delenv("FBGEMM_ENABLE_INSTRUCTIONS", raising=False)
    assert E.exact_bits() == 7
    monkeypatch.setenv("FBGEMM_ENABLE_INSTRUCTIONS", "AVX2")
    assert E.exact_bits() is None
    assert K.int8_matmul_path("cpu") in ("int_mm", "float")   # never fbgemm where inexact


@needs_engine
@given(m=st.integers(1, 9), k=st.integers(1, 300), n=st.integers(1, 20),
       seed=st.integers(0, 2**31 - 1), extreme=st.booleans())
def test_codes_product_matches_int64(m, k, n, seed, extreme):
    gen = torch.Generator().manual_seed(seed)
    hi = 2 ** (FBGEMM_BITS - 1) - 1
    a = torch.randint(-hi - 1, hi + 1, (m, k), generator=gen, dtype=torch.int8)
    w = torch.randint(-128, 128, (n, k), generator=gen, dtype=torch.int8)
    if extreme:                      # the largest uint8 codes against the largest weights
        a[0] = hi
        w[0] = -128
    out = E.matmul_codes(a.float(), E.prepack(w), FBGEMM_BITS)
    assert out.dtype == torch.float32
    assert torch.equal(out.double(), oracle_int64(a, w.t()).double())


@needs_engine
@pytest.mark.parametrize("va, vb", [(-128, -128), (127, 127), (-128, 127), (127, -128)])
def test_split_and_chunked_product_is_exact_at_the_extremes(va, vb):
    # Codes wider than the engine's grid are split in two passes; K = 5000 takes 3 chunks of
    # 2048 (7-bit) or 5 of 1024 (8-bit), each exact in float32, summed in int32.
    a = torch.full((3, 5000), va, dtype=torch.int8)
    b = torch.full((5000, 4), vb, dtype=torch.int8)
    out = K.int8_matmul(a, b, method="fbgemm")
    assert out.dtype == torch.int32
    assert torch.equal(out, torch.full((3, 4), va * vb * 5000, dtype=torch.int32))


@needs_engine
def test_a_single_pass_past_two_to_the_24_would_round():
    # Why K is chunked: one float32 output cannot hold sums above 2^24 exactly.
    hi = 2 ** (FBGEMM_BITS - 1) - 1
    a = torch.full((1, 4099), hi, dtype=torch.int8)
    w = torch.full((1, 4099), 127, dtype=torch.int8)
    a[0, 0] = hi - 2                                 # an odd sum: float32 steps by 2 or 4 here
    exact = int(oracle_int64(a, w.t()))
    assert exact > 2**24 and exact % 2
    assert int(E.matmul_codes(a.float(), E.prepack(w), FBGEMM_BITS)) != exact
    assert int(K.int8_matmul(a, w.t(), method="fbgemm")) == exact


@needs_engine
def test_packed_operand_is_cached_and_refreshed_after_writes():
    gen = torch.Generator().manual_seed(1)
    a, b = rand_int8((4, 64), gen), rand_int8((64, 8), gen)
    K.int8_matmul(a, b, method="fbgemm")
    packs = E._Cache.entry[2]
    assert torch.equal(K.int8_matmul(a, b, method="fbgemm").long(), oracle_int64(a, b))
    assert E._Cache.entry[2] is packs                # reused
    b[0].fill_(-7)                                   # in place: bumps the version counter
    assert torch.equal(K.int8_matmul(a, b, method="fbgemm").long(), oracle_int64(a, b))
    assert E._Cache.entry[2] is not packs
    with torch.inference_mode():                     # no version counter: never cached
        bi = rand_int8((64, 8), gen)
        assert torch.equal(K.int8_matmul(a, bi, method="fbgemm").long(), oracle_int64(a, bi))
        bi.fill_(3)
        assert torch.equal(K.int8_matmul(a, bi, method="fbgemm").long(), oracle_int64(a, bi))


def test_fbgemm_method_refuses_where_it_cannot_run(monkeypatch):
    monkeypatch.setattr(E, "_PROBE", {"": None, "AVX2": None})
    a = torch.ones(2, 3, dtype=torch.int8)
    with pytest.raises(RuntimeError, match="method='auto'"):
        K.int8_matmul(a, a.t(), method="fbgemm")
