"""quantcourse.binary: hand-computed vectors, properties (hypothesis), STE gradients, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import quantcourse as qc

finite = st.floats(-100, 100, allow_nan=False, width=32)
vectors = st.lists(finite, min_size=1, max_size=40).map(lambda v: torch.tensor(v))


def sq_err(w: torch.Tensor, codes: torch.Tensor, alpha: float) -> float:
    return float(((w.double() - alpha * codes.double()) ** 2).sum())


# ---------------------------------------------------------------------------- hand-computed


def test_binarize_per_tensor_by_hand(device):
    w = torch.tensor([0.5, -1.0, 0.0, 2.5], device=device)
    signs, alpha = qc.binarize(w)
    assert signs.dtype == torch.int8 and signs.device == w.device
    assert signs.tolist() == [1, -1, 1, 1]  # 0 maps to +1
    assert alpha.dtype == torch.float32 and alpha.shape == ()
    assert float(alpha) == pytest.approx(1.0)  # (0.5 + 1 + 0 + 2.5) / 4


def test_binarize_per_channel_by_hand():
    w = torch.tensor([[1.0, -3.0], [-0.5, -0.25]])
    signs, alpha = qc.binarize(w, axis=0)
    assert signs.tolist() == [[1, -1], [-1, -1]]
    assert alpha.tolist() == [2.0, 0.375]
    _, alpha_cols = qc.binarize(w, axis=-1)  # negative axes count from the end
    assert alpha_cols.tolist() == [0.75, 1.625]
    assert torch.equal(qc.sign_dequantize(signs, alpha, axis=0),
                       torch.tensor([[2.0, -2.0], [-0.375, -0.375]]))


def test_negative_zero_maps_to_plus_one():
    signs, _ = qc.binarize(torch.tensor([-0.0, 0.0, -1e-30]))
    assert signs.tolist() == [1, 1, -1]


def test_ternarize_by_hand(device):
    # mean|w| = (0.1 + 2 + 0.5 + 1.4) / 4 = 1.0, delta = 0.7: keep -2 and 1.4, alpha = 1.7
    w = torch.tensor([0.1, -2.0, 0.5, 1.4], device=device)
    codes, alpha = qc.ternarize(w)
    assert codes.dtype == torch.int8 and codes.tolist() == [0, -1, 0, 1]
    assert float(alpha) == pytest.approx(1.7)
    codes, alpha = qc.ternarize(w, delta_factor=0.0)  # keeps every non-zero weight
    assert codes.tolist() == [1, -1, 1, 1] and float(alpha) == pytest.approx(1.0)
    codes, _ = qc.ternarize(w, delta_factor=1.4)  # |w| > 1.4 strictly: 1.4 itself is dropped
    assert codes.tolist() == [0, -1, 0, 0]


def test_ternarize_per_channel_by_hand():
    w = torch.tensor([[3.0, 0.0, -3.0, 0.2], [0.0, 0.0, 0.0, 0.0]])
    codes, alpha = qc.ternarize(w, axis=0)
    # row 0: mean|w| = 1.55, delta = 1.085: keep +-3, alpha = 3; row 1: nothing kept, alpha 0
    assert codes.tolist() == [[1, 0, -1, 0], [0, 0, 0, 0]]
    assert alpha.tolist() == [3.0, 0.0]


def test_all_zero_and_all_dropped():
    signs, alpha = qc.binarize(torch.zeros(5))
    assert signs.tolist() == [1] * 5 and float(alpha) == 0.0
    codes, alpha = qc.ternarize(torch.full((4,), -2.0), delta_factor=1.0)  # |w| = delta: dropped
    assert codes.tolist() == [0, 0, 0, 0] and float(alpha) == 0.0
    assert torch.equal(qc.sign_dequantize(codes, alpha), torch.zeros(4))


def test_empty_tensors():
    signs, alpha = qc.binarize(torch.empty(0, 3), axis=1)
    assert signs.shape == (0, 3) and alpha.tolist() == [0.0, 0.0, 0.0]
    codes, alpha = qc.ternarize(torch.empty(0))
    assert codes.shape == (0,) and alpha.shape == () and float(alpha) == 0.0


def test_conv_weight_per_output_channel():
    w = torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    signs, alpha = qc.binarize(w, axis=0)
    assert signs.shape == w.shape and alpha.shape == (8,)
    torch.testing.assert_close(alpha, w.abs().mean(dim=(1, 2, 3)))


# ---------------------------------------------------------------------------- properties


@given(vectors)
def test_binary_alpha_is_optimal_against_a_fine_search(w):
    signs, alpha = qc.binarize(w)
    assert set(signs.tolist()) <= {-1, 1}
    best = sq_err(w, signs, float(alpha))
    top = float(w.abs().max()) * 1.5 + 1e-6
    for a in torch.linspace(0, top, 301).tolist():
        assert best <= sq_err(w, signs, a) + 1e-9 * (1 + best)
    # and no other sign pattern does better at this alpha
    flipped = signs.clone()
    flipped[0] = -flipped[0]
    assert best <= sq_err(w, flipped, float(alpha)) + 1e-9 * (1 + best)


@given(vectors, st.floats(0, 1.5))
def test_ternary_codes_match_the_threshold_and_alpha_is_optimal(w, factor):
    codes, alpha = qc.ternarize(w, delta_factor=factor)
    delta = factor * float(w.double().abs().mean())
    want = [0 if abs(v) <= delta else (1 if v > 0 else -1) for v in w.double().tolist()]
    assert codes.tolist() == want
    kept = codes != 0
    if kept.any():
        assert float(alpha) == pytest.approx(float(w[kept].double().abs().mean()), rel=1e-6)
    else:
        assert float(alpha) == 0.0
    best = sq_err(w, codes, float(alpha))
    top = float(w.abs().max()) * 1.5 + 1e-6
    for a in torch.linspace(0, top, 301).tolist():
        assert best <= sq_err(w, codes, a) + 1e-9 * (1 + best)


@given(st.integers(1, 5), st.integers(1, 6), st.integers(0, 1), st.integers(0, 10_000))
def test_per_channel_equals_per_tensor_slice_by_slice(rows, cols, axis, seed):
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))
    for fn in (qc.binarize, qc.ternarize):
        codes, alpha = fn(w, axis=axis)
        for i in range(w.shape[axis]):
            c_i, a_i = fn(w.select(axis, i))
            assert torch.equal(codes.select(axis, i), c_i)
            assert float(alpha[i]) == float(a_i)


@given(vectors)
def test_ternary_never_worse_than_keeping_nothing(w):
    codes, alpha = qc.ternarize(w)
    assert sq_err(w, codes, float(alpha)) <= float((w.double() ** 2).sum()) + 1e-9


def test_binary_sqnr_of_a_gaussian_matches_theory():
    w = torch.randn(200_000, generator=torch.Generator().manual_seed(1))
    signs, alpha = qc.binarize(w)
    sqnr = qc.sqnr_db(w, qc.sign_dequantize(signs, alpha))
    assert sqnr == pytest.approx(-10 * math.log10(1 - 2 / math.pi), abs=0.05)


# ---------------------------------------------------------------------------- STE


def test_ste_forward_is_the_reconstruction_and_gradient_is_identity():
    w = torch.tensor([[0.5, -1.0, 0.2], [3.0, -0.1, 0.0]], requires_grad=True)
    for fn, ref in ((qc.binarize_ste, qc.binarize), (qc.ternarize_ste, qc.ternarize)):
        out = fn(w, axis=0)
        codes, alpha = ref(w.detach(), axis=0)
        assert torch.equal(out.detach(), qc.sign_dequantize(codes, alpha, axis=0))
        g = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
        (w_grad,) = torch.autograd.grad(out, w, g)
        assert torch.equal(w_grad, g)  # straight through, nothing masked


def test_sign_weight_parametrization_trains_the_latent_weight():
    layer = torch.nn.Linear(4, 2)
    torch.nn.utils.parametrize.register_parametrization(layer, "weight", qc.SignWeight("binary"))
    codes = layer.weight.detach() / layer.weight.detach().abs()
    assert set(codes.reshape(-1).tolist()) <= {-1.0, 1.0}
    layer(torch.ones(1, 4)).sum().backward()
    latent = layer.parametrizations.weight.original
    assert latent.grad is not None and torch.equal(latent.grad, torch.ones(2, 4))


def test_sign_quantized_model_keeps_layers_and_leaves_the_original_alone():
    model = qc.digits_cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    qm = qc.sign_quantized_model(model, "ternary", keep=("conv1", "fc2"))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    codes, alpha = qc.ternarize(model.fc1.weight.detach(), axis=0)
    assert torch.equal(qm.fc1.weight.detach(), qc.sign_dequantize(codes, alpha, axis=0))
    kept = qm.fc2.weight.detach()
    assert len(torch.unique(kept[0])) > 3  # 8-bit grid, not ternary
    qp = qc.symmetric_qparams(model.fc2.weight.detach(), 8, axis=0)
    assert torch.equal(kept, qc.fake_quantize(model.fc2.weight.detach(), qp))
    assert torch.equal(qm.fc1.bias, model.fc1.bias)
    x = qc.digits_data().x_test[:8]
    qm(x).sum().backward()
    assert qm.conv2.parametrizations.weight.original.grad is not None


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("fn", [qc.binarize, qc.ternarize])
def test_bad_input(fn):
    with pytest.raises(TypeError, match="floating-point"):
        fn(torch.tensor([1, -2]))
    with pytest.raises(TypeError, match="complex"):
        fn(torch.tensor([1 + 1j]))
    with pytest.raises(TypeError, match="torch.Tensor"):
        fn([0.5, -0.5])
    with pytest.raises(ValueError, match="1 NaN and 1 infinite"):
        fn(torch.tensor([0.5, float("nan"), float("inf")]))
    with pytest.raises(ValueError, match="out of range"):
        fn(torch.ones(2, 3), axis=2)
    with pytest.raises(TypeError, match="axis"):
        fn(torch.ones(2, 3), axis=0.0)
    with pytest.raises(ValueError, match="at least one dimension"):
        fn(torch.tensor(1.0), axis=0)


def test_bad_delta_factor_and_codes():
    with pytest.raises(ValueError, match="delta_factor"):
        qc.ternarize(torch.ones(3), delta_factor=-0.1)
    with pytest.raises(ValueError, match="delta_factor"):
        qc.ternarize(torch.ones(3), delta_factor=float("nan"))
    with pytest.raises(ValueError, match=r"\{-1, 0, \+1\}"):
        qc.sign_dequantize(torch.tensor([2, 0], dtype=torch.int8), torch.tensor(1.0))
    with pytest.raises(TypeError, match="integer"):
        qc.sign_dequantize(torch.tensor([1.0]), torch.tensor(1.0))
    with pytest.raises(ValueError, match="shape"):
        qc.sign_dequantize(torch.ones(2, 3, dtype=torch.int8), torch.ones(3), axis=0)
    with pytest.raises(ValueError, match=">= 0"):
        qc.sign_dequantize(torch.ones(2, dtype=torch.int8), torch.tensor(-1.0))
    with pytest.raises(ValueError, match="kind"):
        qc.SignWeight("quaternary")
    with pytest.raises(ValueError, match="no module named"):
        qc.sign_quantized_model(qc.digits_cnn(), keep=("conv9",))
    with pytest.raises(ValueError, match="bits"):
        qc.sign_quantized_model(qc.digits_cnn(), keep=("fc2",), keep_bits=1)
