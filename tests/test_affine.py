"""quantcourse.affine: unit, property (hypothesis), oracle (PyTorch) and bad-input tests."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import quantcourse as qc
from quantcourse import affine

from .oracles import torch_ao

EPS32 = torch.finfo(torch.float32).eps


def reference_quantize(x, scale, zp, qmin, qmax):
    """DESIGN section 4 written out in float64-free torch ops, independent of the kernel."""
    inv = torch.reciprocal(scale.float())
    return torch.clamp(torch.round(x.float() * inv) + zp, qmin, qmax)


# ---------------------------------------------------------------------------- unit


def test_symmetric_scale_and_codes_with_exact_power_of_two_scale(device):
    # max|x| = 127 / 8 so s = 1/8 exactly and every product below is exact.
    x = torch.tensor([-127 / 8, 0.0625, 0.1875, -0.0625, 1.0, 127 / 8], device=device)
    qp = qc.symmetric_qparams(x, 8)
    assert (qp.qmin, qp.qmax) == (-127, 127)
    assert float(qp.scale) == 0.125
    assert int(qp.zero_point) == 0
    q = qc.quantize(x, qp)
    assert q.dtype == torch.int8
    # 0.5 -> 0 and 1.5 -> 2 and -0.5 -> 0: round half to even
    assert q.tolist() == [-127, 0, 2, 0, 8, 127]
    assert qc.dequantize(q, qp).tolist() == [-127 / 8, 0.0, 0.25, 0.0, 1.0, 127 / 8]


def test_symmetric_full_range_uses_pytorch_denominator():
    x = torch.tensor([-2.0, 1.0, 0.5])
    qp = qc.symmetric_qparams(x, 8, narrow_range=False)
    assert (qp.qmin, qp.qmax) == (-128, 127)
    assert float(qp.scale) == pytest.approx(2.0 / 127.5, rel=1e-7)


def test_asymmetric_scale_and_zero_point_match_hand_computation(device):
    x = torch.tensor([-1.0, 0.0, 3.0, 2.5], device=device)
    qp = qc.asymmetric_qparams(x, 8)
    s = 4.0 / 255.0
    assert float(qp.scale) == pytest.approx(s, rel=1e-6)
    assert int(qp.zero_point) == round(0 - (-1.0) / s)  # 63.75 -> 64
    assert (qp.qmin, qp.qmax) == (0, 255)
    q = qc.quantize(x, qp)
    assert q.dtype == torch.uint8
    assert int(q[1]) == int(qp.zero_point)  # real zero lands on the zero point
    assert int(q[0]) == 0 and int(q[2]) == 255


@pytest.mark.parametrize(
    "values, zp",
    [([2.0, 5.0, 3.0], 0), ([-5.0, -2.0, -3.0], 255)],
    ids=["all-positive", "all-negative"],
)
def test_asymmetric_range_widened_to_include_zero(values, zp):
    x = torch.tensor(values)
    qp = qc.asymmetric_qparams(x, 8)
    assert int(qp.zero_point) == zp
    assert float(qp.scale) == pytest.approx(5.0 / 255, rel=1e-6)
    assert float(qc.dequantize(qc.quantize(torch.zeros(1), qp), qp)) == 0.0


def test_signed_asymmetric_is_unsigned_shifted_by_half_the_range():
    x = torch.randn(1000) * 3 + 1
    u = qc.asymmetric_qparams(x, 8)
    s = qc.asymmetric_qparams(x, 8, signed=True)
    assert torch.equal(u.scale, s.scale)
    assert int(s.zero_point) == int(u.zero_point) - 128
    assert torch.equal(qc.quantize(x, s).int(), qc.quantize(x, u).int() - 128)
    assert torch.equal(qc.dequantize(qc.quantize(x, s), s), qc.dequantize(qc.quantize(x, u), u))


@pytest.mark.parametrize(
    "bits, signed, dtype",
    [(8, True, torch.int8), (8, False, torch.uint8), (4, True, torch.int8), (12, True, torch.int16),
     (16, False, torch.int32), (1, False, torch.int8), (16, True, torch.int16)],
)
def test_storage_dtype(bits, signed, dtype):
    x = torch.randn(64)
    qp = qc.asymmetric_qparams(x, bits, signed=signed)
    assert qc.quantize(x, qp).dtype == dtype
    assert qp.bits == bits


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
@pytest.mark.parametrize("scheme", ["symmetric", "asymmetric"])
def test_per_channel_equals_per_tensor_on_each_slice(axis, scheme, device):
    torch.manual_seed(axis + 3)
    x = torch.randn(3, 4, 5, device=device) * torch.arange(1, 6, device=device)
    make = qc.symmetric_qparams if scheme == "symmetric" else qc.asymmetric_qparams
    qp = make(x, 6, axis=axis)
    ax = axis % x.ndim
    assert qp.scale.shape == (x.shape[ax],) and qp.axis == ax
    q = qc.quantize(x, qp)
    xh = qc.dequantize(q, qp)
    for c in range(x.shape[ax]):
        sl = x.select(ax, c)
        qps = make(sl, 6)
        assert torch.equal(qc.quantize(sl, qps), q.select(ax, c))
        assert torch.equal(qc.dequantize(qc.quantize(sl, qps), qps), xh.select(ax, c))


@pytest.mark.parametrize("scheme", ["symmetric", "asymmetric"])
def test_per_group_equals_per_tensor_on_each_group(scheme, device):
    torch.manual_seed(1)
    x = torch.randn(4, 12, device=device)
    make = qc.symmetric_qparams if scheme == "symmetric" else qc.asymmetric_qparams
    qp = make(x, 4, group_size=4)
    assert qp.scale.shape == (4, 3) and qp.group_size == 4
    q = qc.quantize(x, qp)
    for r in range(4):
        for g in range(3):
            sl = x[r, 4 * g : 4 * g + 4]
            assert torch.equal(qc.quantize(sl, make(sl, 4)), q[r, 4 * g : 4 * g + 4])


@pytest.mark.parametrize("scheme", ["symmetric", "asymmetric"])
def test_blocked_cpu_path_equals_reference(scheme):
    torch.manual_seed(0)
    n = affine._BLOCK * 3 + 12345  # several blocks plus a ragged tail
    x = torch.randn(n) * 2 + (1.5 if scheme == "asymmetric" else 0.0)
    qp = (qc.symmetric_qparams if scheme == "symmetric" else qc.asymmetric_qparams)(x, 8)
    got = qc.quantize(x, qp)
    want = reference_quantize(x, qp.scale, qp.zero_point, qp.qmin, qp.qmax)
    assert torch.equal(got.float(), want)
    # a tensor outside the calibrated range exercises the clamp in the blocked path
    assert torch.equal(qc.quantize(3 * x, qp).float(),
                       reference_quantize(3 * x, qp.scale, qp.zero_point, qp.qmin, qp.qmax))


def test_blocked_path_handles_non_contiguous_and_half_inputs():
    x = torch.randn(600, 1000).t()
    qp = qc.symmetric_qparams(x)
    assert torch.equal(qc.quantize(x, qp), qc.quantize(x.contiguous(), qp))
    xh = torch.randn(affine._BLOCK + 7).half()
    qph = qc.symmetric_qparams(xh)
    assert torch.equal(qc.quantize(xh, qph).float(),
                       reference_quantize(xh, qph.scale, 0, qph.qmin, qph.qmax))


def test_fake_quantize_equals_quantize_then_dequantize(device):
    x = torch.randn(50, 7, device=device)
    for qp in [qc.symmetric_qparams(x, 5), qc.asymmetric_qparams(x, 3, axis=1),
               qc.symmetric_qparams(x[:, :6], 4, group_size=3)]:
        xs = x if qp.group_size is None else x[:, :6]
        assert torch.equal(qc.fake_quantize(xs, qp), qc.dequantize(qc.quantize(xs, qp), qp))


def test_fake_quantize_gradient_mask_is_explicit():
    qp = qc.QParams(torch.tensor(0.5), torch.tensor(0), -4, 3)
    # codes before clamping: -6, -4, 0, 3, 4 -> inside for -4, 0, 3
    x = torch.tensor([-3.0, -2.0, 0.1, 1.5, 2.0], requires_grad=True)
    y = qc.fake_quantize(x, qp)
    y.backward(torch.full_like(y, 2.0))
    assert x.grad.tolist() == [0.0, 2.0, 2.0, 2.0, 0.0]
    assert y.tolist() == [-2.0, -2.0, 0.0, 1.5, 1.5]


def test_fake_quantize_keeps_input_dtype():
    x = torch.randn(10, dtype=torch.float64)
    assert qc.fake_quantize(x, qc.symmetric_qparams(x)).dtype == torch.float64


def test_qparams_move_between_devices(device):
    x = torch.randn(10)
    qp = qc.symmetric_qparams(x).to(device)
    assert qp.scale.device.type == device
    assert qc.quantize(x.to(device), qp).device.type == device


# ---------------------------------------------------------------------------- oracle


def _halves_tensor(scale: float, zp: int, qmin: int, qmax: int, n: int = 400, seed: int = 0):
    """Exact halves of the grid, plus random values in and beyond range."""
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(qmin - zp - 3, qmax - zp + 3, (n,), generator=g)
    halves = (k.float() + 0.5) * scale
    rand = (torch.rand(n, generator=g) * 2 - 1) * scale * (qmax - qmin) * 0.8
    return torch.cat([halves, rand, torch.tensor([0.0])])


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("scheme", ["sym", "sym_full", "asym", "asym_signed"])
@pytest.mark.parametrize("seed", range(4))
def test_fake_quantize_per_tensor_matches_pytorch_bit_for_bit(bits, scheme, seed):
    g = torch.Generator().manual_seed(seed)
    data = torch.randn(300, generator=g) * (seed + 1) + (2.0 if "asym" in scheme else 0.0)
    qp = {
        "sym": lambda: qc.symmetric_qparams(data, bits),
        "sym_full": lambda: qc.symmetric_qparams(data, bits, narrow_range=False),
        "asym": lambda: qc.asymmetric_qparams(data, bits),
        "asym_signed": lambda: qc.asymmetric_qparams(data, bits, signed=True),
    }[scheme]()
    s, z = float(qp.scale), int(qp.zero_point)
    x = torch.cat([data, _halves_tensor(s, z, qp.qmin, qp.qmax, seed=seed)]).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    ours = qc.fake_quantize(x, qp)
    ref = torch.fake_quantize_per_tensor_affine(x_ref, s, z, qp.qmin, qp.qmax)
    assert torch.equal(ours, ref)
    grad = torch.randn(x.shape, generator=g)
    ours.backward(grad)
    ref.backward(grad)
    assert torch.equal(x.grad, x_ref.grad)
    assert float((x.grad == 0).sum()) > 0  # some values were out of range: the mask was tested


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("scheme", ["sym", "asym"])
def test_fake_quantize_per_channel_matches_pytorch_bit_for_bit(axis, scheme):
    torch.manual_seed(7 + axis)
    w = torch.randn(16, 24) * torch.linspace(0.1, 3, 24)
    qp = (qc.symmetric_qparams(w, 8, axis=axis) if scheme == "sym"
          else qc.asymmetric_qparams(w, 8, axis=axis))
    shape = [1, 1]
    shape[axis] = -1
    halves = (torch.randint(-140, 140, w.shape).float() + 0.5) * qp.scale.reshape(shape)
    x = torch.cat([w, halves, 1.5 * w], dim=1 - axis).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    ours = qc.fake_quantize(x, qp)
    ref = torch.fake_quantize_per_channel_affine(
        x_ref, qp.scale, qp.zero_point, axis, qp.qmin, qp.qmax)
    assert torch.equal(ours, ref)
    grad = torch.randn(x.shape)
    ours.backward(grad)
    ref.backward(grad)
    assert torch.equal(x.grad, x_ref.grad)




@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_int8_symmetric_full_range_scale_matches_minmaxtorch_ao():
    obs_cls = torch_ao("MinMaxObserver")
    for seed in range(5):
        x = torch.randn(1000, generator=torch.Generator().manual_seed(seed)) * (seed + 0.5) - seed
        obs = obs_cls(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
        obs(x)
        scale, zp = obs.calculate_qparams()
        qp = qc.symmetric_qparams(x, 8, narrow_range=False)
        assert torch.equal(qp.scale.reshape(1), scale.reshape(1).float())
        assert int(zp) == int(qp.zero_point) == 0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_uint8_asymmetric_qparams_match_minmaxtorch_ao():
    obs_cls = torch_ao("MinMaxObserver")
    for seed in range(5):
        x = torch.randn(1000, generator=torch.Generator().manual_seed(seed)) * 2 + seed - 2
        obs = obs_cls(dtype=torch.quint8, qscheme=torch.per_tensor_affine)
        obs(x)
        scale, zp = obs.calculate_qparams()
        qp = qc.asymmetric_qparams(x, 8)
        assert torch.equal(qp.scale.reshape(1), scale.reshape(1).float())
        assert int(qp.zero_point) == int(zp)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_quantize_matches_pytorch_quantize_per_tensor_codes():
    if not hasattr(torch, "quantize_per_tensor"):
        pytest.skip("torch.quantize_per_tensor is gone from this PyTorch")
    x = torch.randn(affine._BLOCK + 1000) * 3
    qp = qc.asymmetric_qparams(x, 8)
    ref = torch.quantize_per_tensor(x, float(qp.scale), int(qp.zero_point), torch.quint8)
    diff = (qc.quantize(x, qp).int() - ref.int_repr().int()).abs()
    # The deprecated fused op rounds exact halves of x * (1/s) its own way (fbgemm); our codes
    # follow torch.fake_quantize_* exactly (tested above), so allow one code at rare ties only.
    assert int(diff.max()) <= 1
    assert int((diff > 0).sum()) <= x.numel() // 10_000


# ---------------------------------------------------------------------------- properties

finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)
tensors = st.lists(finite, min_size=1, max_size=64).map(lambda v: torch.tensor(v))
schemes = st.sampled_from(["sym", "sym_full", "asym", "asym_signed"])


def _make(x, bits, scheme, **kw):
    if scheme.startswith("sym"):
        return qc.symmetric_qparams(x, max(bits, 2), narrow_range=scheme == "sym", **kw)
    return qc.asymmetric_qparams(x, bits, signed=scheme == "asym_signed", **kw)


def _roundtrip_bound(x, scale):
    # half a step, plus float32 rounding of the products (a few ulps of the values)
    return scale / 2 * (1 + 1e-5) + 4 * EPS32 * x.abs()


@given(tensors, st.integers(1, 16), schemes)
def test_roundtrip_error_at_most_half_a_step(x, bits, scheme):
    qp = _make(x, bits, scheme)
    err = (qc.dequantize(qc.quantize(x, qp), qp) - x).abs()
    assert bool((err <= _roundtrip_bound(x, qp.scale)).all()), (err.max(), qp)


@given(st.integers(1, 4), st.integers(2, 6), st.integers(0, 2), st.integers(2, 8), schemes,
       st.integers(0, 10_000))
def test_roundtrip_bound_per_channel_and_group(a, b, axis, bits, scheme, seed):
    x = torch.randn(a, b, 4, generator=torch.Generator().manual_seed(seed)) * 10
    for kw in ({"axis": axis}, {"group_size": 2}):
        qp = _make(x, bits, scheme, **kw)
        err = (qc.fake_quantize(x, qp) - x).abs()
        if "axis" in kw:
            shape = [1, 1, 1]
            shape[axis] = -1
            s = qp.scale.reshape(shape)
        else:
            s = qp.scale.repeat_interleave(2, dim=-1)
        assert bool((err <= _roundtrip_bound(x, s)).all())


@given(st.integers(1, 16), st.booleans(), st.floats(1e-3, 1e3), st.data())
def test_quantize_of_dequantize_is_identity_on_the_grid(bits, signed, scale, data):
    qmin, qmax = qc.qrange(bits, signed=signed)
    zp = data.draw(st.integers(qmin, qmax))
    qp = qc.QParams(torch.tensor(scale), torch.tensor(zp), qmin, qmax)
    codes = torch.tensor(data.draw(st.lists(st.integers(qmin, qmax), min_size=1, max_size=50)))
    q = codes.to(qp.dtype)
    assert torch.equal(qc.quantize(qc.dequantize(q, qp), qp), q)


@given(tensors, st.integers(1, 16), schemes)
def test_quantize_is_monotone(x, bits, scheme):
    qp = _make(x, bits, scheme)
    xs, _ = torch.sort(x)
    q = qc.quantize(xs, qp).long()
    assert bool((q[1:] >= q[:-1]).all())


@given(tensors, st.integers(1, 16), schemes)
def test_zero_maps_exactly_to_the_zero_point(x, bits, scheme):
    qp = _make(x, bits, scheme)
    q0 = qc.quantize(torch.zeros(3), qp)
    assert q0.tolist() == [int(qp.zero_point)] * 3
    assert qc.dequantize(q0, qp).tolist() == [0.0] * 3


@given(st.floats(-1e6, 1e6, width=32), st.integers(1, 100), st.integers(1, 16), schemes)
def test_constant_tensors_roundtrip_with_finite_scale(c, n, bits, scheme):
    x = torch.full((n,), c)
    qp = _make(x, bits, scheme)
    s = float(qp.scale)
    assert math.isfinite(s) and s > 0
    xh = qc.dequantize(qc.quantize(x, qp), qp)
    assert bool(torch.isfinite(xh).all())
    assert bool(((xh - x).abs() <= _roundtrip_bound(x, qp.scale)).all())


@pytest.mark.parametrize("scheme", ["sym", "sym_full", "asym", "asym_signed"])
def test_all_zero_tensor_roundtrips_exactly(scheme):
    x = torch.zeros(10)
    qp = _make(x, 8, scheme)
    assert float(qp.scale) == EPS32
    assert torch.equal(qc.dequantize(qc.quantize(x, qp), qp), x)
    assert torch.equal(qc.fake_quantize(x, qp), x)


# ---------------------------------------------------------------------------- bad input


def _raises(exc, match, fn, *args, **kwargs):
    with pytest.raises(exc, match=match):
        fn(*args, **kwargs)


def test_nan_and_inf_are_counted_in_the_message():
    x = torch.tensor([1.0, float("nan"), float("inf"), float("nan"), -float("inf")])
    for fn in (qc.symmetric_qparams, qc.asymmetric_qparams):
        _raises(ValueError, "2 NaN and 2 infinite", fn, x)
    qp = qc.symmetric_qparams(torch.ones(3))
    _raises(ValueError, "2 NaN and 2 infinite", qc.quantize, x, qp)
    _raises(ValueError, "2 NaN and 2 infinite", qc.fake_quantize, x, qp)
    _raises(ValueError, "1 NaN", qc.symmetric_qparams, torch.tensor([[0.0, 1.0], [float("nan"), 2]]), axis=1)


def test_nan_in_a_large_tensor_is_caught_by_the_blocked_path():
    x = torch.randn(affine._BLOCK * 2)
    qp = qc.symmetric_qparams(x)
    x[12345] = float("nan")
    _raises(ValueError, "1 NaN and 0 infinite", qc.quantize, x, qp)


@pytest.mark.parametrize("bits", [0, 17, -3, 2.5, "8", True])
def test_bad_bits(bits):
    _raises(ValueError, "bits", qc.asymmetric_qparams, torch.ones(3), bits)


def test_one_bit_symmetric_is_rejected():
    _raises(ValueError, "between 2 and 16", qc.symmetric_qparams, torch.ones(3), 1)


def test_bad_axis_and_group_size():
    x = torch.randn(4, 6)
    _raises(ValueError, "axis 2 is out of range", qc.symmetric_qparams, x, axis=2)
    _raises(ValueError, "does not divide", qc.symmetric_qparams, x, group_size=4)
    _raises(ValueError, "positive", qc.symmetric_qparams, x, group_size=0)
    _raises(ValueError, "not both", qc.symmetric_qparams, x, axis=0, group_size=2)
    _raises(ValueError, "at least one dimension", qc.symmetric_qparams, torch.tensor(1.0), axis=0)
    qp = qc.symmetric_qparams(x, axis=0)
    _raises(ValueError, "4 scales but axis 0 of the input has 5", qc.quantize, torch.randn(5, 6), qp)
    qpg = qc.symmetric_qparams(x, group_size=3)
    _raises(ValueError, "does not match", qc.quantize, torch.randn(2, 6), qpg)


def test_bad_qparams():
    _raises(ValueError, "zero_point must lie in", qc.QParams, torch.tensor(0.1), torch.tensor(300), 0, 255)
    _raises(ValueError, "scale must be positive", qc.QParams, torch.tensor(0.0), torch.tensor(0), -127, 127)
    _raises(ValueError, "scale must be positive", qc.QParams, torch.tensor([0.1, -1.0]), torch.zeros(2), -127, 127, axis=0)
    _raises(ValueError, "finite", qc.QParams, torch.tensor(float("inf")), torch.tensor(0), -127, 127)
    _raises(ValueError, "qmin", qc.QParams, torch.tensor(0.1), torch.tensor(0), 5, 5)
    _raises(ValueError, "integers", qc.QParams, torch.tensor(0.1), torch.tensor(0.5), 0, 255)
    _raises(TypeError, "QParams", qc.quantize, torch.ones(3), (0.1, 0))


@pytest.mark.parametrize("bad", [torch.arange(4), torch.ones(3, dtype=torch.complex64),
                                 torch.ones(2, dtype=torch.bool), [1.0, 2.0]])
def test_non_float_inputs_are_type_errors(bad):
    for fn in (qc.symmetric_qparams, qc.asymmetric_qparams):
        _raises(TypeError, "expected", fn, bad)
    _raises(TypeError, "expected", qc.quantize, bad, qc.symmetric_qparams(torch.ones(3)))


def test_dequantize_needs_integers_on_the_grid():
    qp = qc.symmetric_qparams(torch.ones(3), 4)
    _raises(TypeError, "integer tensor", qc.dequantize, torch.ones(3), qp)
    _raises(ValueError, r"outside the grid \[-7, 7\]", qc.dequantize, torch.tensor([0, 9], dtype=torch.int8), qp)


def test_empty_tensors_give_empty_results(device):
    x = torch.empty(0, 5, device=device)
    for qp in (qc.symmetric_qparams(x), qc.asymmetric_qparams(x, axis=1),
               qc.symmetric_qparams(x, group_size=5)):
        assert bool(torch.isfinite(qp.scale).all())
        q = qc.quantize(x, qp)
        assert q.shape == x.shape and q.dtype == qp.dtype
        assert qc.dequantize(q, qp).shape == x.shape
        assert qc.fake_quantize(x, qp).shape == x.shape
