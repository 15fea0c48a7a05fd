"""quantcourse.kernels: exact int8 GEMM (unit, property, oracle), on every device."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from quantcourse import kernels as K
from tests.int8_cases import (
    FBGEMM_BITS,
    METHOD_NAMES,
    METHODS,
    cpu_int_mm_is_exact,
    rand_int8,
)
from tests.oracles import oracle_int64

# (M, K, N): M <= 16 and M > 16, K odd, below / at / across the 1024 block and 8-multiples.
SHAPES = [
    (1, 7, 5),
    (1, 1, 1),
    (3, 33, 9),
    (16, 8, 8),
    (17, 1000, 13),
    (5, 1024, 3),
    (8, 1025, 16),
    (20, 2049, 24),
    (2, 4096, 3),
]


# ---------------------------------------------------------------------------- int8_matmul


def test_reference_matches_int64_oracle():
    gen = torch.Generator().manual_seed(0)
    for m, k, n in SHAPES:
        a, b = rand_int8((m, k), gen), rand_int8((k, n), gen)
        ref = K.int8_matmul_reference(a, b)
        assert ref.dtype == torch.int32 and ref.shape == (m, n)
        assert torch.equal(ref.long(), oracle_int64(a, b))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_int8_matmul_exact_on_random_shapes(shape, method):
    m, k, n = shape
    gen = torch.Generator().manual_seed(m * 10007 + k * 101 + n)
    a, b = rand_int8((m, k), gen), rand_int8((k, n), gen)
    out = K.int8_matmul(a, b, method=method)
    assert out.dtype == torch.int32 and out.shape == (m, n)
    assert torch.equal(out, K.int8_matmul_reference(a, b))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("k", [7, 1024, 1025, 2049])
@pytest.mark.parametrize("va, vb", [(-128, -128), (127, 127), (-128, 127), (127, -128)])
def test_int8_matmul_extreme_values(method, k, va, vb):
    # Worst-case accumulation: every product is +-2^14 or 127^2 (odd, so sums above 2^24
    # are not float32 numbers: a single float32 matmul could not get them right).
    a = torch.full((3, k), va, dtype=torch.int8)
    b = torch.full((k, 4), vb, dtype=torch.int8)
    out = K.int8_matmul(a, b, method=method)
    assert torch.equal(out, torch.full((3, 4), va * vb * k, dtype=torch.int32))


@pytest.mark.parametrize("method", METHODS)
def test_int8_matmul_mixed_extremes(method):
    gen = torch.Generator().manual_seed(1)
    choices = torch.tensor([-128, -127, 127, 0, 1, -1], dtype=torch.int8)
    a = choices[torch.randint(0, 6, (19, 2049), generator=gen)]
    b = choices[torch.randint(0, 6, (2049, 11), generator=gen)]
    assert torch.equal(K.int8_matmul(a, b, method=method).long(), oracle_int64(a, b))


def test_a_single_float32_matmul_is_not_exact_so_blocking_matters():
    # The check above can fail: 2049 * 127^2 = 33048321 is odd and above 2^24.
    a = torch.full((1, 2049), 127, dtype=torch.int8)
    b = torch.full((2049, 1), 127, dtype=torch.int8)
    naive = (a.float() @ b.float()).to(torch.int32)
    assert int(naive) != 33048321
    assert int(K.int8_matmul(a, b, method="float")) == 33048321


@pytest.mark.parametrize("method", METHODS)
def test_int8_matmul_accepts_transposed_and_strided_views(method):
    gen = torch.Generator().manual_seed(2)
    w = rand_int8((24, 1030), gen)  # (N, K) like a Linear weight
    x = rand_int8((5, 2060), gen)[:, ::2]  # non-contiguous (5, 1030)
    out = K.int8_matmul(x, w.t(), method=method)
    assert torch.equal(out.long(), oracle_int64(x, w.t()))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", [(0, 5, 3), (4, 0, 3), (4, 5, 0)])
def test_int8_matmul_empty(method, shape):
    m, k, n = shape
    out = K.int8_matmul(torch.zeros(m, k, dtype=torch.int8), torch.zeros(k, n, dtype=torch.int8),
                        method=method)
    assert out.shape == (m, n) and out.dtype == torch.int32 and not out.any()


@given(
    m=st.integers(1, 20),
    k=st.integers(1, 40),
    n=st.integers(1, 20),
    seed=st.integers(0, 2**31 - 1),
    extreme=st.booleans(),
    method=st.sampled_from(METHOD_NAMES),
)
def test_int8_matmul_property_matches_int64(m, k, n, seed, extreme, method):
    gen = torch.Generator().manual_seed(seed)
    if extreme:
        pick = torch.tensor([-128, 127], dtype=torch.int8)
        a = pick[torch.randint(0, 2, (m, k), generator=gen)]
        b = pick[torch.randint(0, 2, (k, n), generator=gen)]
    else:
        a, b = rand_int8((m, k), gen), rand_int8((k, n), gen)
    assert torch.equal(K.int8_matmul(a, b, method=method).long(), oracle_int64(a, b))


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")
def test_auto_path_follows_the_cpu():
    fast = (
        torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
        and torch.cpu._is_vnni_supported()
        and cpu_int_mm_is_exact()
    )
    fbgemm = FBGEMM_BITS is not None
    assert K.int8_matmul_path("cpu") == ("int_mm" if fast else "fbgemm" if fbgemm else "float")
    # A reused (prepacked) operand goes to fbgemm wherever it is exact, VNNI or not.
    assert K.int8_matmul_path("cpu", prepacked=True) == (
        "fbgemm" if fbgemm else "int_mm" if fast else "float")
    assert K.int8_matmul_path("cuda") == "int_mm"
    assert K.int8_matmul_path("cuda", prepacked=True) == "int_mm"
    with torch.backends.mkldnn.flags(enabled=False):
        assert K.int8_matmul_path("cpu") == ("fbgemm" if fbgemm else "float")
    # The activation grid a W8A8 layer needs for one exact pass.
    assert K.int8_activation_bits("cpu") == (FBGEMM_BITS if fbgemm else 8)
    assert K.int8_activation_bits("cpu", "float") == 8
    assert K.int8_activation_bits("cuda") == 8


def test_float_path_bounds_its_partial_results(monkeypatch):
    # With a tiny cap the K blocks are multiplied a few at a time and added in int32.
    monkeypatch.setattr(K, "_PARTIALS_CAP", 2 * 6 * 5)
    gen = torch.Generator().manual_seed(6)
    a, b = rand_int8((6, 5000), gen), rand_int8((5000, 5), gen)
    assert torch.equal(K.int8_matmul(a, b, method="float").long(), oracle_int64(a, b))


@pytest.mark.skipif(
    not hasattr(getattr(torch.backends.mkldnn, "matmul", None), "fp32_precision"),
    reason="this PyTorch has no per-backend fp32_precision setting",
)
def test_float_path_exact_under_reduced_matmul_precision_and_restores_it():
    gen = torch.Generator().manual_seed(3)
    a, b = rand_int8((9, 1500), gen), rand_int8((1500, 7), gen)
    backend = torch.backends.mkldnn.matmul
    prev = backend.fp32_precision
    backend.fp32_precision = "bf16"
    try:
        assert torch.equal(K.int8_matmul(a, b, method="float").long(), oracle_int64(a, b))
        assert backend.fp32_precision == "bf16"
    finally:
        backend.fp32_precision = prev


@pytest.mark.parametrize(
    "a, b, exc, match",
    [
        (torch.zeros(2, 3), torch.zeros(3, 2, dtype=torch.int8), TypeError, "int8"),
        (torch.zeros(2, 3, dtype=torch.uint8), torch.zeros(3, 2, dtype=torch.int8), TypeError,
         "uint8"),
        (torch.zeros(2, 3, dtype=torch.int8), torch.zeros(3, 2, dtype=torch.int32), TypeError,
         "int32"),
        ([[1]], torch.zeros(1, 1, dtype=torch.int8), TypeError, "torch.Tensor"),
        (torch.zeros(3, dtype=torch.int8), torch.zeros(3, 2, dtype=torch.int8), ValueError,
         "2-D"),
        (torch.zeros(2, 3, dtype=torch.int8), torch.zeros(4, 2, dtype=torch.int8), ValueError,
         "inner dimensions"),
        (torch.zeros(1, K.MAX_K + 1, dtype=torch.int8),
         torch.zeros(K.MAX_K + 1, 1, dtype=torch.int8), ValueError, "overflow"),
    ],
    ids=["float-a", "uint8-a", "int32-b", "list", "1-D", "mismatch", "K-too-large"],
)
def test_int8_matmul_bad_input(a, b, exc, match):
    with pytest.raises(exc, match=match):
        K.int8_matmul(a, b)
    with pytest.raises(exc, match=match):
        K.int8_matmul_reference(a, b)


def test_int8_matmul_bad_method():
    a = torch.zeros(2, 2, dtype=torch.int8)
    with pytest.raises(ValueError, match="method"):
        K.int8_matmul(a, a, method="fast")


def test_max_k_is_the_int32_limit():
    assert K.MAX_K * 128 * 128 <= 2**31 - 1 < (K.MAX_K + 1) * 128 * 128


# ---------------------------------------------------------------------------- devices (CUDA)

DEVICE_SHAPES = [(1, 7, 5), (16, 33, 9), (17, 1000, 13), (32, 2049, 64), (40, 64, 48), (3, 8, 8)]


@pytest.mark.parametrize("shape", DEVICE_SHAPES + [(17, 24, 24), (64, 1, 1)],
                         ids=lambda s: "x".join(map(str, s)))
def test_cuda_padding_logic_checked_on_cpu(monkeypatch, shape):
    # Run the CUDA padding path on the CPU against a torch._int_mm that enforces cuBLASLt's
    # shape rules (M > 16; K, N multiples of 8; K > 16 in some releases) and layouts.
    seen = []

    def strict_int_mm(a, b):
        m, k = a.shape
        n = b.shape[1]
        assert m > 16 and k > 16 and k % 8 == 0 and n % 8 == 0, (m, k, n)
        assert a.is_contiguous() and (b.is_contiguous() or b.t().is_contiguous())
        seen.append((m, k, n))
        return (a.long() @ b.long()).to(torch.int32)   # exact, whatever the CPU's engine

    monkeypatch.setattr(torch, "_int_mm", strict_int_mm)
    m, k, n = shape
    gen = torch.Generator().manual_seed(8)
    a, b = rand_int8((m, k), gen), rand_int8((k, n), gen)
    for bb in (b, b.t().contiguous().t()):
        out = K._int_mm_padded(a, bb, pad=True)
        assert out.shape == (m, n) and out.is_contiguous()
        assert torch.equal(out, K.int8_matmul_reference(a, b))
    assert seen


@pytest.mark.parametrize("method", METHODS)
def test_int8_matmul_on_device_matches_cpu_reference(device, method):
    gen = torch.Generator().manual_seed(4)
    for m, k, n in DEVICE_SHAPES:
        a, b = rand_int8((m, k), gen), rand_int8((k, n), gen)
        out = K.int8_matmul(a.to(device), b.to(device), method=method)
        assert out.device.type == torch.device(device).type
        assert out.dtype == torch.int32 and out.shape == (m, n)
        assert torch.equal(out.cpu(), K.int8_matmul_reference(a, b)), (m, k, n)
        # column-major b (a Linear weight's transpose), the layout the layers use
        bt = b.t().contiguous().t()
        out_t = K.int8_matmul(a.to(device), bt.to(device), method=method)
        assert torch.equal(out_t.cpu(), K.int8_matmul_reference(a, b)), (m, k, n)


def test_int8_matmul_on_device_extremes(device):
    for va, vb in [(-128, -128), (127, 127)]:
        a = torch.full((5, 2049), va, dtype=torch.int8, device=device)
        b = torch.full((2049, 12), vb, dtype=torch.int8, device=device)
        out = K.int8_matmul(a, b)
        assert torch.equal(out.cpu(), torch.full((5, 12), va * vb * 2049, dtype=torch.int32))
