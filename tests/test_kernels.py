"""quantcourse.kernels: exact int8 GEMM (unit, property, oracle), quantized linear layers vs
their fake-quantized simulation, safetensors round trips, and agreement with fbgemm."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

import quantcourse as qc
from quantcourse import kernels as K


def _cpu_int_mm_is_exact() -> bool:
    """Whether torch._int_mm adds int8 products exactly here (worst-case pair sums)."""
    a = torch.full((32, 64), 127, dtype=torch.int8)
    b = torch.full((64, 8), 127, dtype=torch.int8)
    return torch.equal(torch._int_mm(a, b).long(), a.long() @ b.long())


# With oneDNN capped below VNNI (ONEDNN_MAX_CPU_ISA=AVX2, the emulated CPU of CI) on a VNNI
# machine, torch._int_mm saturates int16 pair sums; the course refuses method="int_mm" there
# (tests/test_int8_path.py) and its "auto" path avoids it.
INT_MM = pytest.param("int_mm", marks=pytest.mark.skipif(
    not _cpu_int_mm_is_exact(), reason="torch._int_mm is not exact with oneDNN's ISA capped"))
METHODS = ["auto", "float", INT_MM]
METHOD_NAMES = ["auto", "float"] + (["int_mm"] if _cpu_int_mm_is_exact() else [])
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


def rand_int8(shape, gen, device="cpu"):
    return torch.randint(-128, 128, shape, generator=gen, dtype=torch.int8).to(device)


def oracle_int64(a, b):
    """Independent oracle: int64 matmul on the CPU (no floats anywhere)."""
    return a.cpu().long() @ b.cpu().long()


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
        and _cpu_int_mm_is_exact()
    )
    assert K.int8_matmul_path("cpu") == ("int_mm" if fast else "float")
    assert K.int8_matmul_path("cuda") == "int_mm"
    with torch.backends.mkldnn.flags(enabled=False):
        assert K.int8_matmul_path("cpu") == "float"


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


@pytest.mark.parametrize("cls", ["W8A8Linear", "W8A16Linear", "W4A16Linear"])
def test_layers_on_device_match_cpu(device, cls):
    torch.manual_seed(5)
    lin = torch.nn.Linear(256, 40)
    x = torch.randn(3, 17, 256)
    layer = getattr(K, cls).from_float(lin).to(device)
    with torch.no_grad():
        out = layer(x.to(device))
    assert out.device.type == torch.device(device).type
    # An independent float64 reference on the CPU, built from the float layer (not from the
    # moved layer, which on device="cpu" is the same object): the fake-quantized simulation.
    w, b = lin.weight.detach().double(), lin.bias.detach().double()
    if cls == "W8A8Linear":
        ref, _ = w8a8_simulation(lin, x)
    else:
        bits, kw = (8, {"axis": 0}) if cls == "W8A16Linear" else (4, {"group_size": 128})
        wf = qc.fake_quantize(w.float(), qc.symmetric_qparams(w.float(), bits, **kw)).double()
        ref = x.double() @ wf.T + b
    # The integer accumulation is exact on every device; the float epilogue and the
    # weight-only float matmul round in float32 (and differently on a GPU).
    torch.testing.assert_close(out.cpu().double(), ref, rtol=1e-5, atol=1e-5)
    # the reference is sharp enough to fail: the float layer itself is far from it
    with torch.no_grad():
        assert (lin(x).double() - ref).abs().max() > 1e-3


# ---------------------------------------------------------------------------- layers


def make_linear(in_f, out_f, bias=True, seed=0):
    torch.manual_seed(seed)
    lin = torch.nn.Linear(in_f, out_f, bias=bias)
    with torch.no_grad():
        # a few outlier weights, as in real layers
        lin.weight[0, :3] *= 8
    return lin


INPUT_SHAPES = [(1, 256), (7, 256), (2, 5, 256), (256,)]


def w8a8_simulation(lin, x):
    """Fake-quantized float64 simulation: per-token int8 inputs, per-channel int8 weights.

    Returns the simulated output and a rounding bound: the layer and the simulation each
    round every term of the sum to float32 a few times (relative error ~2^-24 per step).
    """
    w = lin.weight.detach()
    x2 = x.reshape(-1, x.shape[-1])
    xf = qc.fake_quantize(x2, qc.symmetric_qparams(x2, 8, axis=0)).double()
    wf = qc.fake_quantize(w, qc.symmetric_qparams(w, 8, axis=0)).double()
    b = torch.zeros(w.shape[0], dtype=torch.float64) if lin.bias is None else lin.bias.double()
    sim = xf @ wf.T + b
    bound = 1e-6 * (xf.abs() @ wf.abs().T + b.abs()) + 1e-12
    shape = (*x.shape[:-1], w.shape[0])
    return sim.reshape(shape), bound.reshape(shape)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", INPUT_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("method", METHODS)
def test_w8a8_matches_fake_quant_simulation(shape, bias, method):
    lin = make_linear(256, 48, bias=bias, seed=len(shape))
    layer = K.W8A8Linear.from_float(lin, method=method)
    x = torch.randn(shape) * 2
    with torch.no_grad():
        out = layer(x)
    sim, bound = w8a8_simulation(lin, x)
    assert out.shape == sim.shape and out.dtype == torch.float32
    err = (out.double() - sim).abs()
    assert bool((err <= bound).all()), float((err / bound).max())


def test_w8a8_simulation_check_can_fail():
    # Leaving the activations unquantized (a W8A16 layer) breaks the W8A8 bound.
    lin = make_linear(256, 48)
    x = torch.randn(7, 256)
    with torch.no_grad():
        out = K.W8A16Linear.from_float(lin)(x)
    sim, bound = w8a8_simulation(lin, x)
    assert not bool(((out.double() - sim).abs() <= bound).all())


def test_w8a8_functional_fused_rescale_by_hand():
    lin = make_linear(64, 8)
    x = torch.randn(3, 64)
    layer = K.W8A8Linear.from_float(lin)
    x_q, qp_x = K.quantize_per_token(x)
    acc = K.int8_matmul_reference(x_q, layer.weight_q.t())
    expect = acc.float() * (qp_x.scale[:, None] * layer.weight_scale[None, :]) + lin.bias.detach()
    out = K.w8a8_linear(x, layer.weight_q, layer.weight_scale, lin.bias.detach())
    assert torch.equal(out, expect)


def test_quantize_per_token_one_scale_per_row():
    x = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0], [127.0, 1.0, -127.0]])
    q, qp = K.quantize_per_token(x.reshape(3, 1, 3))
    assert q.shape == (3, 3) and q.dtype == torch.int8
    assert qp.scale.shape == (3,) and qp.axis == 0
    torch.testing.assert_close(qp.scale[0], torch.tensor(2.0 / 127))
    assert q[2].tolist() == [127, 1, -127]
    assert not q[1].any()


@given(
    rows=st.integers(1, 6),
    cols=st.integers(1, 40),
    seed=st.integers(0, 2**31 - 1),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float64]),
    halves=st.booleans(),
)
def test_quantize_per_token_codes_equal_quantize(rows, cols, seed, dtype, halves):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=gen) * 3
    if halves:  # values landing on exact .5 steps: round half to even must agree
        x = torch.randint(-254, 255, (rows, cols), generator=gen) / 2.0
        x[:, 0] = 127.0
    x = x.to(dtype)
    q, qp = K.quantize_per_token(x)
    assert torch.equal(q, qc.quantize(x, qp))
    assert q.dtype == torch.int8 and q.abs().max() <= 127


@pytest.mark.parametrize("group_size", [None, 64, 256])
@pytest.mark.parametrize("shape", INPUT_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_w8a16_matches_fake_quant_simulation(shape, group_size):
    lin = make_linear(256, 40, seed=1)
    layer = K.W8A16Linear.from_float(lin, group_size=group_size)
    x = torch.randn(shape)
    w = lin.weight.detach()
    qp = (qc.symmetric_qparams(w, 8, axis=0) if group_size is None
          else qc.symmetric_qparams(w, 8, group_size=group_size))
    with torch.no_grad():
        out = layer(x)
        sim = torch.nn.functional.linear(x, qc.fake_quantize(w, qp), lin.bias)
    # the dequantized weights equal the fake-quantized ones bit for bit
    assert torch.equal(out, sim)
    assert layer.weight_q.dtype == torch.int8


@pytest.mark.parametrize("group_size", [128, 32, 256])
@pytest.mark.parametrize("shape", INPUT_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_w4a16_matches_fake_quant_simulation(shape, group_size):
    lin = make_linear(256, 40, bias=group_size != 32, seed=2)
    layer = K.W4A16Linear.from_float(lin, group_size=group_size)
    x = torch.randn(shape)
    w = lin.weight.detach()
    qp = qc.symmetric_qparams(w, 4, group_size=group_size)
    with torch.no_grad():
        out = layer(x)
        sim = torch.nn.functional.linear(x, qc.fake_quantize(w, qp), lin.bias)
    assert torch.equal(out, sim)
    # two 4-bit codes per byte, in pack_bits' layout
    assert layer.weight_packed.dtype == torch.uint8
    assert layer.weight_packed.numel() == 40 * 256 // 2
    assert torch.equal(layer.weight_packed, qc.pack_bits(qc.quantize(w, qp), 4, signed=True))
    assert layer.unpacked_weight().abs().max() <= 7


@pytest.mark.parametrize(
    "make_qp",
    [
        lambda w: qc.symmetric_qparams(w, 8, axis=0),
        lambda w: qc.symmetric_qparams(w, 8, group_size=16),
        lambda w: qc.symmetric_qparams(w, 8),
        lambda w: qc.asymmetric_qparams(w, 8, axis=0, signed=True),
        lambda w: qc.symmetric_qparams(w, 8, axis=1),
    ],
    ids=["channel", "group", "tensor", "asymmetric", "axis1"],
)
def test_weight_only_linear_fast_path_is_bit_identical(make_qp):
    torch.manual_seed(7)
    w = torch.randn(24, 64)
    x = torch.randn(5, 64)
    b = torch.randn(24)
    qp = make_qp(w)
    q = qc.quantize(w, qp)
    checked = K.weight_only_linear(x, q, qp, b)
    fast = K.weight_only_linear(x, q, qp, b, check_codes=False)
    sim = torch.nn.functional.linear(x, qc.fake_quantize(w, qp), b)
    assert torch.equal(checked, sim) and torch.equal(fast, sim)


def test_weight_only_linear_checks_codes():
    w = torch.randn(4, 8)
    qp = qc.symmetric_qparams(w, 4, axis=0)
    bad = torch.full((4, 8), 9, dtype=torch.int8)
    with pytest.raises(ValueError, match="outside the grid"):
        K.weight_only_linear(torch.randn(2, 8), bad, qp)
    with pytest.raises(TypeError, match="QParams"):
        K.weight_only_linear(torch.randn(2, 8), bad, qp.scale)


def test_w4a16_default_group_size_is_128():
    layer = K.W4A16Linear.from_float(make_linear(384, 8))
    assert layer.group_size == 128 and layer.weight_scale.shape == (8, 3)


@pytest.mark.parametrize("cls", [K.W4A16Linear, K.W8A16Linear])
def test_group_size_must_divide_in_features(cls):
    with pytest.raises(ValueError, match=r"group_size 128 must divide in_features \(200\)"):
        cls.from_float(make_linear(200, 8), group_size=128)
    with pytest.raises(ValueError, match="group_size"):
        cls.from_float(make_linear(256, 8), group_size=0)


def test_w4a16_default_group_rejects_small_layer_clearly():
    with pytest.raises(ValueError, match="must divide in_features"):
        K.W4A16Linear.from_float(make_linear(64, 8))


@pytest.mark.parametrize(
    "cls, rel", [(K.W8A8Linear, 0.02), (K.W8A16Linear, 0.01), (K.W4A16Linear, 0.15)]
)
def test_layers_close_to_float_linear(cls, rel):
    lin = make_linear(256, 64, seed=3)
    x = torch.randn(32, 256)
    with torch.no_grad():
        ref = lin(x)
        out = cls.from_float(lin)(x)
    assert float((out - ref).norm() / ref.norm()) < rel


@pytest.mark.parametrize("cls", [K.W8A8Linear, K.W8A16Linear, K.W4A16Linear])
def test_layers_half_precision_input_and_empty_batch(cls):
    layer = cls.from_float(make_linear(256, 16))
    x = torch.randn(4, 256)
    out16 = layer(x.to(torch.bfloat16))
    assert out16.dtype == torch.bfloat16 and out16.shape == (4, 16)
    torch.testing.assert_close(out16.float(), layer(x), rtol=0.05, atol=0.05)
    assert layer(torch.zeros(0, 256)).shape == (0, 16)


@pytest.mark.parametrize("cls", [K.W8A8Linear, K.W8A16Linear, K.W4A16Linear])
def test_layer_bad_inputs(cls):
    layer = cls.from_float(make_linear(256, 16))
    with pytest.raises(ValueError, match="in_features = 256"):
        layer(torch.randn(3, 255))
    with pytest.raises(TypeError, match="floating-point"):
        layer(torch.ones(3, 256, dtype=torch.int64))
    with pytest.raises(TypeError, match="nn.Linear"):
        cls.from_float(torch.nn.Conv1d(3, 3, 1))
    bad = make_linear(256, 16)
    with torch.no_grad():
        bad.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        cls.from_float(bad)


def test_w8a8_rejects_nan_activations():
    layer = K.W8A8Linear.from_float(make_linear(256, 16))
    x = torch.randn(2, 256)
    x[1, 3] = float("inf")
    with pytest.raises(ValueError, match="infinite"):
        layer(x)


def test_constructors_validate_codes_and_scales():
    w = torch.zeros(4, 8, dtype=torch.int8)
    s = torch.ones(4)
    with pytest.raises(ValueError, match="outside the symmetric grid"):
        K.W8A8Linear(torch.full((4, 8), -128, dtype=torch.int8), s)
    with pytest.raises(ValueError, match="positive"):
        K.W8A8Linear(w, torch.zeros(4))
    with pytest.raises(ValueError, match="shape"):
        K.W8A16Linear(w, torch.ones(3))
    with pytest.raises(TypeError, match="int8"):
        K.W8A8Linear(w.float(), s)
    with pytest.raises(ValueError, match="bytes"):
        K.W4A16Linear(torch.zeros(3, dtype=torch.uint8), torch.ones(4, 1),
                      in_features=8, out_features=4, group_size=8)


# ---------------------------------------------------------------------------- save / load


def layer_cases():
    cases = [
        ("w8a8", lambda lin: K.W8A8Linear.from_float(lin)),
        ("w8a8-float", lambda lin: K.W8A8Linear.from_float(lin, method="float")),
        ("w8a16", lambda lin: K.W8A16Linear.from_float(lin)),
        ("w8a16-g64", lambda lin: K.W8A16Linear.from_float(lin, group_size=64)),
        ("w4a16", lambda lin: K.W4A16Linear.from_float(lin)),
        ("w4a16-g32", lambda lin: K.W4A16Linear.from_float(lin, group_size=32)),
    ]
    fb = pytest.mark.skipif(not K.fbgemm_available(), reason="no fbgemm/x86 quantized engine")
    cases.append(pytest.param("fbgemm", lambda lin: K.FbgemmDynamicLinear.from_float(lin),
                              marks=fb))
    cases.append(pytest.param(
        "fbgemm-full-range",
        lambda lin: K.FbgemmDynamicLinear.from_float(lin, reduce_range=False), marks=fb))
    return cases


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("name, build", layer_cases())
def test_save_load_round_trip_is_bit_exact(tmp_path, name, build, bias):
    lin = make_linear(256, 24, bias=bias, seed=4)
    layer = build(lin)
    path = K.save_quantized(layer, tmp_path / f"{name}.safetensors")
    loaded = K.load_quantized(path)
    assert type(loaded) is type(layer)
    before, after = layer.state_dict(), loaded.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert before[key].dtype == after[key].dtype, key
        assert torch.equal(before[key], after[key]), key
    for attr in ("group_size", "method", "reduce_range"):
        assert getattr(loaded, attr, None) == getattr(layer, attr, None)
    x = torch.randn(3, 2, 256)
    with torch.no_grad():
        assert torch.equal(loaded(x), layer(x))
    # integer codes on disk, float32 scales, no pickle
    with safe_open(path, framework="pt") as f:
        keys = set(f.keys())
        codes = f.get_tensor("weight_packed" if "w4a16" in name else "weight_q")
        assert codes.dtype == (torch.uint8 if "w4a16" in name else torch.int8)
        assert f.get_tensor("weight_scale").dtype == torch.float32
        assert f.metadata()["class"] == type(layer).__name__
    assert ("bias" in keys) == bias


def test_save_rejects_other_modules(tmp_path):
    with pytest.raises(TypeError, match="W8A8Linear"):
        K.save_quantized(torch.nn.Linear(2, 2), tmp_path / "x.safetensors")


def test_load_rejects_foreign_files(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(ValueError, match="not a quantcourse quantized layer"):
        K.load_quantized(path)
    layer = K.W8A8Linear.from_float(make_linear(256, 8))
    good = K.save_quantized(layer, tmp_path / "good.safetensors")
    with safe_open(good, framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = dict(f.metadata())
    meta["class"] = "Nope"
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="unknown layer class"):
        K.load_quantized(tmp_path / "bad.safetensors")
    meta["class"], meta["in_features"] = "W8A8Linear", "255"
    save_file(tensors, str(tmp_path / "bad2.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="metadata"):
        K.load_quantized(tmp_path / "bad2.safetensors")


# ---------------------------------------------------------------------------- fbgemm

needs_fbgemm = pytest.mark.skipif(not K.fbgemm_available(),
                                  reason="this PyTorch build has no fbgemm/x86 quantized engine")


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


@needs_fbgemm
@pytest.mark.parametrize("shape", INPUT_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_fbgemm_agrees_with_w8a8(shape):
    lin = make_linear(256, 64, seed=6)
    x = torch.randn(shape)
    with torch.no_grad():
        ref = lin(x)
        ours = K.W8A8Linear.from_float(lin)(x)
        fb_layer = K.FbgemmDynamicLinear.from_float(lin)
        full_layer = K.FbgemmDynamicLinear.from_float(lin, reduce_range=False)
        fb, fb_full = fb_layer(x), full_layer(x)
    assert fb.shape == ours.shape == ref.shape
    # Same int8 weights; fbgemm's activations are per tensor, asymmetric, 7-bit
    # (reduce_range): a few percent apart, not bit-identical.
    assert rel_err(fb, ours) < 0.05
    assert rel_err(fb, ref) < 0.05
    # What 8-bit activations (reduce_range=False) give depends on the machine: exact sums with
    # VNNI, int16-saturated pair sums without (10-13% off the float layer on AVX2-only CPUs).
    # Predict this machine's case with the model and check fbgemm follows it.
    vnni = qc.u8s8_has_vnni("fbgemm")
    parts = (full_layer.weight_q, full_layer.weight_scale, full_layer.bias)
    predicted = qc.fbgemm_dynamic_linear_model(x, *parts, reduce_range=False, saturate=not vnni)
    other = qc.fbgemm_dynamic_linear_model(x, *parts, reduce_range=False, saturate=vnni)
    assert rel_err(fb_full, predicted) < 1e-5, (vnni, rel_err(fb_full, predicted))
    if not torch.equal(predicted, other):          # this input saturates somewhere
        assert rel_err(fb_full, other) > 10 * rel_err(fb_full, predicted)
    if vnni:
        # exact 8-bit arithmetic lands closer to the float layer than 7-bit activations
        assert rel_err(fb_full, ref) < rel_err(fb, ref)
    # 7-bit activations cannot saturate: the same answer on every machine
    exact7 = qc.fbgemm_dynamic_linear_model(x, fb_layer.weight_q, fb_layer.weight_scale,
                                            fb_layer.bias, reduce_range=True, saturate=False)
    assert rel_err(fb, exact7) < 1e-5


@needs_fbgemm
def test_fbgemm_repacks_after_load_state_dict():
    torch.manual_seed(11)
    a, b = make_linear(64, 16, seed=1), make_linear(64, 16, seed=2)
    layer = K.FbgemmDynamicLinear.from_float(a)
    target = K.FbgemmDynamicLinear.from_float(b)
    x = torch.randn(5, 64)
    with torch.no_grad():
        before = layer(x)
        layer.load_state_dict(target.state_dict())
        after, expected = layer(x), target(x)
    assert not torch.allclose(before, expected, atol=1e-2)     # the two layers differ
    # the packed fbgemm weights were rebuilt from the loaded codes, scales and bias
    torch.testing.assert_close(after, expected, rtol=0, atol=0)
    # an in-place edit of the codes is picked up too
    with torch.no_grad():
        layer.weight_q.neg_()
        flipped = layer(x)
    w8a8 = K.W8A8Linear(layer.weight_q, layer.weight_scale, layer.bias)
    assert rel_err(flipped, w8a8(x)) < 0.05
    with torch.no_grad():
        layer.weight_q[0, 0] = -128        # outside the narrow grid fbgemm's layer accepts
    with pytest.raises(ValueError, match="outside"):
        layer(x)


@needs_fbgemm
def test_fbgemm_is_quiet_and_uses_our_weights():
    lin = make_linear(256, 32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layer = K.FbgemmDynamicLinear.from_float(lin)
        layer(torch.randn(2, 256))
    assert not [w for w in caught if "deprecat" in str(w.message).lower()]
    w8a8 = K.W8A8Linear.from_float(lin)
    assert torch.equal(layer.weight_q, w8a8.weight_q)
    assert torch.equal(layer.weight_scale, w8a8.weight_scale)
    with pytest.raises(ValueError, match="in_features"):
        layer(torch.randn(2, 3))
    assert layer(torch.zeros(0, 256)).shape == (0, 32)


def test_fbgemm_unavailable_raises_clearly(monkeypatch):
    monkeypatch.setattr(K, "fbgemm_available", lambda: False)
    with pytest.raises(RuntimeError, match="W8A8Linear"):
        K.FbgemmDynamicLinear.from_float(make_linear(16, 4))
