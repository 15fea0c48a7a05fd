"""quantcourse.engines and FbgemmDynamicLinear: PyTorch's fbgemm dynamic int8 linear agrees
with W8A8Linear and with the model of this machine's u8 x s8 arithmetic, repacks stale weights
and stays quiet."""

from __future__ import annotations

import warnings

import pytest
import torch

import quantcourse as qc
from quantcourse import qlinear as Q
from tests.int8_cases import INPUT_SHAPES, make_linear, rel_err

needs_fbgemm = pytest.mark.skipif(not qc.fbgemm_available(),
                                  reason="this PyTorch build has no fbgemm/x86 quantized engine")


@needs_fbgemm
@pytest.mark.parametrize("shape", INPUT_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_fbgemm_agrees_with_w8a8(shape):
    lin = make_linear(256, 64, seed=6)
    x = torch.randn(shape)
    with torch.no_grad():
        ref = lin(x)
        ours = Q.W8A8Linear.from_float(lin)(x)
        fb_layer = Q.FbgemmDynamicLinear.from_float(lin)
        full_layer = Q.FbgemmDynamicLinear.from_float(lin, reduce_range=False)
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
    layer = Q.FbgemmDynamicLinear.from_float(a)
    target = Q.FbgemmDynamicLinear.from_float(b)
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
    w8a8 = Q.W8A8Linear(layer.weight_q, layer.weight_scale, layer.bias)
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
        layer = Q.FbgemmDynamicLinear.from_float(lin)
        layer(torch.randn(2, 256))
    assert not [w for w in caught if "deprecat" in str(w.message).lower()]
    w8a8 = Q.W8A8Linear.from_float(lin)
    assert torch.equal(layer.weight_q, w8a8.weight_q)
    assert torch.equal(layer.weight_scale, w8a8.weight_scale)
    with pytest.raises(ValueError, match="in_features"):
        layer(torch.randn(2, 3))
    assert layer(torch.zeros(0, 256)).shape == (0, 32)


def test_fbgemm_unavailable_raises_clearly(monkeypatch):
    monkeypatch.setattr(Q, "fbgemm_available", lambda: False)
    with pytest.raises(RuntimeError, match="W8A8Linear"):
        Q.FbgemmDynamicLinear.from_float(make_linear(16, 4))
