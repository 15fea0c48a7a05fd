"""quantcourse.hessian: Hutchinson's trace, HAWQ sensitivity, GPTQ and its Hessian."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import quantcourse as qc


def _spd(n, seed, cond=20.0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    eig = torch.logspace(0, math.log10(cond), n, dtype=torch.float64)
    return (q * eig) @ q.T


# ---------------------------------------------------------------- Hutchinson


def test_hutchinson_is_exact_for_a_diagonal_quadratic():
    # v^T A v = sum_i A_ii v_i^2 = trace(A) for every Rademacher v when A is diagonal
    d = torch.tensor([0.5, 2.0, 3.0, 7.25], dtype=torch.float64)
    x = torch.randn(4, dtype=torch.float64, requires_grad=True)
    loss = 0.5 * (x * d * x).sum()
    est = qc.hutchinson_trace(loss, x, min_iter=3)
    assert est.iterations == 3
    assert float(est.trace[0]) == pytest.approx(12.75, rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hutchinson_matches_the_known_trace_of_a_quadratic(seed):
    n = 30
    a = _spd(n, seed)
    true_trace = 0.0
    for i in range(n):  # summed by hand, not with torch.trace
        true_trace += float(a[i, i])
    x = torch.randn(n, dtype=torch.float64, requires_grad=True)
    loss = 0.5 * x @ a @ x
    est = qc.hutchinson_trace(loss, [x], max_iter=400, min_iter=400, seed=seed)
    assert est.iterations == 400 and est.samples.shape == (400, 1)
    # variance of one Rademacher sample: 2 * sum of the squared off-diagonal entries
    off = a - torch.diag(torch.diagonal(a))
    std_err = math.sqrt(2 * float((off**2).sum()) / 400)
    assert abs(float(est.trace[0]) - true_trace) < 4 * std_err


def test_hutchinson_blocks_stop_on_relative_change_and_are_seeded():
    a = _spd(12, 3)
    b = _spd(5, 4) * 10
    x = torch.randn(12, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, dtype=torch.float64, requires_grad=True)
    loss = 0.5 * x @ a @ x + 0.5 * y @ b @ y + (x[:5] * y).sum()  # cross terms are not in blocks
    e1 = qc.hutchinson_trace(loss, [x, y], rtol=1e-2, seed=7)
    e2 = qc.hutchinson_trace(loss, [x, y], rtol=1e-2, seed=7)
    e3 = qc.hutchinson_trace(loss, [x, y], rtol=1e-2, seed=8)
    assert torch.equal(e1.trace, e2.trace) and e1.iterations == e2.iterations
    assert not torch.equal(e1.samples[:5], e3.samples[:5])
    assert 10 <= e1.iterations < 200
    means = e1.samples.cumsum(0) / torch.arange(1, e1.iterations + 1).unsqueeze(1)
    last = (means[-1] - means[-2]).abs() / means[-1].abs()
    assert bool((last <= 1e-2).all())
    assert float(e1.trace[1]) == pytest.approx(float(torch.diagonal(b).sum()), rel=0.3)


def test_hawq_sensitivity_per_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    loss = nn.functional.cross_entropy(model(x), y)
    sens = qc.hawq_sensitivity(model, loss, rtol=1e-2)
    assert list(sens) == ["0", "2"]
    for name, rec in sens.items():
        assert rec["params"] == model.get_submodule(name).weight.numel()
        assert rec["sensitivity"] == pytest.approx(rec["trace"] / rec["params"])
    # the last layer's block of a softmax cross-entropy is positive semi-definite
    assert sens["2"]["trace"] > 0
    with pytest.raises(ValueError, match="no layer"):
        qc.hawq_sensitivity(model, loss, layers=["nope"])


def test_hutchinson_bad_input():
    x = torch.randn(3, requires_grad=True)
    with pytest.raises(ValueError, match="scalar"):
        qc.hutchinson_trace(x * 2, x)
    with pytest.raises(ValueError, match="autograd"):
        qc.hutchinson_trace((x * 2).sum().detach(), x)
    with pytest.raises(ValueError, match="min_iter"):
        qc.hutchinson_trace((x**2).sum(), x, min_iter=5, max_iter=2)


# ---------------------------------------------------------------- GPTQ


def _rtn(w, bits, group_size=None):
    qp = (qc.symmetric_qparams(w, bits, axis=0) if group_size is None
          else qc.symmetric_qparams(w, bits, group_size=group_size))
    return qc.fake_quantize(w, qp)


def _layer_error(w_hat, w, x):
    return float(((w_hat.double() - w.double()) @ x.double().T).pow(2).sum())


def _calibration(n, cols, seed):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(cols, cols, generator=g) / math.sqrt(cols)
    scale = torch.rand(cols, generator=g) * 3 + 0.1          # unequal feature scales
    return (torch.randn(n, cols, generator=g) @ mix) * scale + 0.3


def test_gptq_hessian_is_two_x_transpose_x():
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.0, 4.0]])
    h = qc.gptq_hessian(x.reshape(3, 1, 2))
    expected = torch.tensor([[2 * (1 + 9 + 0), 2 * (2 - 3 + 0)],
                             [2 * (2 - 3 + 0), 2 * (4 + 1 + 16)]], dtype=torch.float64)
    assert h.dtype == torch.float64 and torch.equal(h, expected)
    assert torch.equal(qc.gptq_hessian([x[:1], x[1:]]), expected)     # batches add up


@pytest.mark.parametrize("bits, group_size, act_order",
                         [(4, None, False), (3, None, True), (2, 16, False), (4, 32, True)])
def test_gptq_with_a_diagonal_hessian_is_round_to_nearest(bits, group_size, act_order):
    g = torch.Generator().manual_seed(bits)
    w = torch.randn(24, 64, generator=g)
    h = torch.diag(torch.rand(64, generator=g, dtype=torch.float64) + 0.1)
    w_hat, qp = qc.gptq(w, h, bits, group_size=group_size, act_order=act_order, block_size=16)
    assert torch.equal(w_hat, _rtn(w, bits, group_size))
    assert qp.zero_point.abs().sum() == 0 and qp.qmax == 2 ** (bits - 1) - 1


@pytest.mark.parametrize("group_size, act_order", [(None, False), (None, True), (32, False),
                                                   (32, True)])
def test_gptq_block_size_does_not_change_the_result(group_size, act_order):
    w = torch.randn(16, 128, generator=torch.Generator().manual_seed(1))
    h = qc.gptq_hessian(_calibration(400, 128, 1))
    ref, qp_ref = qc.gptq(w, h, 4, group_size=group_size, act_order=act_order, block_size=128)
    for bs in (1, 7, 32, 200):
        got, qp = qc.gptq(w, h, 4, group_size=group_size, act_order=act_order, block_size=bs)
        # float rounding may move a value across a rounding boundary: at most one step
        step = qp_ref.scale.reshape(16, -1).max().item()
        assert (got - ref).abs().max().item() <= step * 1.0001
        assert ((got - ref).abs() > 1e-5).double().mean() < 0.01
        assert torch.allclose(qp.scale, qp_ref.scale, rtol=1e-4)


@pytest.mark.parametrize("seed, shape, bits, group_size, act_order", [
    (0, (32, 64), 4, None, False), (1, (48, 96), 3, None, True), (2, (20, 128), 4, 32, False),
    (3, (64, 64), 2, None, False), (4, (16, 256), 3, 64, True), (5, (40, 80), 8, None, False),
])
def test_gptq_never_increases_the_layer_output_error(seed, shape, bits, group_size, act_order):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(*shape, generator=g) * (torch.rand(shape[1], generator=g) + 0.5)
    x = _calibration(3 * shape[1], shape[1], seed)
    w_hat, qp = qc.gptq(w, qc.gptq_hessian(x), bits, group_size=group_size, act_order=act_order,
                        block_size=32)
    assert w_hat.shape == w.shape and w_hat.dtype == w.dtype
    assert torch.equal(qc.dequantize(qc.quantize(w_hat, qp), qp), w_hat)   # on its own grid
    assert qp.granularity == ("channel" if group_size is None else "group")
    assert _layer_error(w_hat, w, x) < _layer_error(_rtn(w, bits, group_size), w, x)


def test_gptq_keeps_dtype_and_handles_dead_inputs():
    w = torch.randn(8, 32, generator=torch.Generator().manual_seed(2)).to(torch.float64)
    x = _calibration(100, 32, 2)
    x[:, 5] = 0.0                                         # an input that is always zero
    w_hat, qp = qc.gptq(w, qc.gptq_hessian(x), 4)
    assert w_hat.dtype == torch.float64 and torch.all(w_hat[:, 5] == 0)
    assert torch.isfinite(w_hat).all()


def test_gptq_bad_input_raises_before_any_work():
    w = torch.randn(8, 32)
    h = torch.eye(32)
    with pytest.raises(ValueError, match="square"):
        qc.gptq(w, torch.ones(32, 16), 4)
    with pytest.raises(ValueError, match="32 input columns"):
        qc.gptq(w, torch.eye(16), 4)
    with pytest.raises(ValueError, match="does not divide"):
        qc.gptq(w, h, 4, group_size=12)
    with pytest.raises(ValueError, match="bits"):
        qc.gptq(w, h, 1)
    bad = h.clone()
    bad[3, 3] = float("nan")
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        qc.gptq(w, bad, 4)
    with pytest.raises(ValueError, match="2-D"):
        qc.gptq(w.reshape(8, 4, 8), h, 4)
    with pytest.raises(ValueError, match="positive definite"):
        qc.gptq(w, 2 * torch.ones(32, 32) - h, 4, percdamp=0.0)   # diagonal 1, off-diagonal 2
    x = torch.randn(10, 32)
    x[2, 3] = float("inf")
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        qc.gptq_hessian(x)
    with pytest.raises(ValueError, match="features"):
        qc.gptq_hessian([torch.randn(4, 32), torch.randn(4, 16)])
    with pytest.raises(TypeError):
        qc.gptq_hessian(torch.ones(4, 3, dtype=torch.int64))
