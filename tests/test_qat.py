"""Tests for quantcourse.qat: LSQ against PyTorch's learnable fake-quant ops, the QAT layers,
BatchNorm folding against PyTorch's modules, the prepare / freeze / convert flow, bad input."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import quantcourse as qc


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same_state(model, before):
    after = model.state_dict()
    return set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)


def _bn_model(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 5 * 5, 3))
    with torch.no_grad():  # running statistics and affine parameters away from 0 / 1
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.3, 0.3)
    return model.eval()


# ---------------------------------------------------------------- LSQ against PyTorch


def test_lsq_grad_factor_by_hand():
    assert qc.lsq_grad_factor(100, 1) == pytest.approx(0.1)
    assert qc.lsq_grad_factor(2, 8) == pytest.approx(0.25)
    for bad in (0, -3, 1.5, True):
        with pytest.raises(ValueError, match="n must be a positive int"):
            qc.lsq_grad_factor(bad, 7)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(2, 8), st.booleans(), st.floats(0.05, 1.0))
def test_lsq_per_tensor_matches_torch_learnable_op(seed, bits, symmetric, scale):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 7, 5, generator=gen) * 2
    if symmetric:
        qmin, qmax, z = -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1, 0.0
    else:
        qmin, qmax = 0, 2**bits - 1
        z = float(torch.randint(0, qmax + 1, (), generator=gen))
    g = qc.lsq_grad_factor(x.numel(), qmax)
    dy = torch.randn(x.shape, generator=gen)

    xa, sa, za = x.clone().requires_grad_(), torch.tensor([scale]).requires_grad_(), \
        torch.tensor([z]).requires_grad_()
    out_a = torch._fake_quantize_learnable_per_tensor_affine(xa, sa, za, qmin, qmax, g)
    out_a.backward(dy)
    xb, sb, zb = x.clone().requires_grad_(), torch.tensor(scale).requires_grad_(), \
        torch.tensor(z).requires_grad_()
    out_b = qc.lsq_fake_quantize(xb, sb, zb, qmin, qmax, grad_factor=g)
    out_b.backward(dy)
    assert torch.equal(out_a, out_b)
    assert torch.equal(xa.grad, xb.grad)
    assert torch.allclose(sa.grad.reshape(()), sb.grad, rtol=1e-4, atol=1e-6)
    assert torch.allclose(za.grad.reshape(()), zb.grad, rtol=1e-4, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(2, 8), st.integers(0, 2))
def test_lsq_per_channel_matches_torch_learnable_op(seed, bits, axis):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 6, 5, generator=gen)
    channels = x.shape[axis]
    qmin, qmax = -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
    scale = torch.rand(channels, generator=gen) * 0.5 + 0.05
    g = qc.lsq_grad_factor(x.numel() // channels, qmax)
    dy = torch.randn(x.shape, generator=gen)
    xa, sa, za = x.clone().requires_grad_(), scale.clone().requires_grad_(), \
        torch.zeros(channels, requires_grad=True)
    out_a = torch._fake_quantize_learnable_per_channel_affine(xa, sa, za, axis, qmin, qmax, g)
    out_a.backward(dy)
    xb, sb, zb = x.clone().requires_grad_(), scale.clone().requires_grad_(), \
        torch.zeros(channels, requires_grad=True)
    out_b = qc.lsq_fake_quantize(xb, sb, zb, qmin, qmax, axis=axis, grad_factor=g)
    out_b.backward(dy)
    assert torch.equal(out_a, out_b)
    assert torch.equal(xa.grad, xb.grad)
    assert torch.allclose(sa.grad, sb.grad, rtol=1e-4, atol=1e-6)
    assert torch.allclose(za.grad, zb.grad, rtol=1e-4, atol=1e-6)


def test_lsq_scale_gradient_by_hand():
    # s = 1, grid [-1, 1]: x = 0.3 rounds to 0 (d/ds = 0 - 0.3), x = 5 clips (d/ds = qmax = 1),
    # x = -0.8 rounds to -1 (d/ds = -1 + 0.8)
    x = torch.tensor([0.3, 5.0, -0.8], requires_grad=True)
    s = torch.tensor(1.0, requires_grad=True)
    qc.lsq_fake_quantize(x, s, torch.tensor(0.0), -1, 1, grad_factor=0.5).sum().backward()
    assert float(s.grad) == pytest.approx(0.5 * (-0.3 + 1.0 - 0.2))
    assert x.grad.tolist() == [1.0, 0.0, 1.0]


def test_lsq_fake_quantize_bad_input():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="positive"):
        qc.lsq_fake_quantize(x, torch.tensor(0.0), torch.tensor(0.0), -7, 7)
    with pytest.raises(ValueError, match="3 value"):
        qc.lsq_fake_quantize(x, torch.ones(4), torch.zeros(4), -7, 7, axis=1)
    with pytest.raises(ValueError, match="qmin < qmax"):
        qc.lsq_fake_quantize(x, torch.tensor(1.0), torch.tensor(0.0), 7, -7)
    with pytest.raises(TypeError, match="float tensor"):
        qc.lsq_fake_quantize(x.int(), torch.tensor(1.0), torch.tensor(0.0), -7, 7)


# ---------------------------------------------------------------- FakeQuantize


def test_weight_fake_quantize_equals_quantize_weight():
    w = torch.randn(8, 5, 3, 3)
    for channels, gran in ((8, "channel"), (None, "tensor")):
        fq = qc.FakeQuantize(3, channels=channels)
        want, _ = qc.quantize_weight(w, 3, granularity=gran)
        assert torch.equal(fq(w), want)


def test_activation_observer_moves_in_training_only_and_freezes():
    fq = qc.FakeQuantize(8, role="activation", symmetric=False, averaging_constant=0.5)
    fq.train()
    fq(torch.tensor([0.0, 1.0]))
    s1 = float(fq.scale)
    assert s1 == pytest.approx(1 / 255)
    fq(torch.tensor([0.0, 3.0]))  # moving average of the max: 1 + 0.5 * (3 - 1) = 2
    assert float(fq.scale) == pytest.approx(2 / 255)
    fq.eval()
    fq(torch.tensor([0.0, 100.0]))
    assert float(fq.scale) == pytest.approx(2 / 255)
    fq.train()
    fq.observer_enabled = False
    out = fq(torch.tensor([0.0, 100.0]))
    assert float(fq.scale) == pytest.approx(2 / 255)
    assert float(out[1]) == pytest.approx(2.0)  # clipped at the frozen range


def test_learnable_fake_quantize_starts_from_the_observer_and_learns():
    w = torch.randn(4, 10)
    fq = qc.FakeQuantize(2, channels=4, learnable=True)
    want, qp = qc.quantize_weight(w, 2)
    assert torch.equal(fq(w), want)
    assert not fq.observer_enabled and isinstance(fq.scale, nn.Parameter)
    assert torch.equal(fq.scale.detach(), qp.scale)
    ((fq(w) - w) ** 2).sum().backward()
    assert fq.scale.grad is not None and bool((fq.scale.grad != 0).any())


def test_fake_quantize_bad_arguments():
    with pytest.raises(ValueError, match="role"):
        qc.FakeQuantize(4, role="bias")
    with pytest.raises(ValueError, match="per tensor"):
        qc.FakeQuantize(4, role="activation", channels=3)
    with pytest.raises(ValueError):
        qc.FakeQuantize(1)
    with pytest.raises(RuntimeError, match="forward"):
        qc.FakeQuantize(4).qparams()


# ---------------------------------------------------------------- BatchNorm folding


def test_fold_bn_matches_conv_then_bn_in_eval():
    model = _bn_model()
    x = torch.randn(6, 2, 5, 5)
    folded = qc.fold_bn(model[0], model[1])
    with torch.no_grad():
        assert torch.allclose(folded(x), model[1](model[0](x)), atol=1e-5)
    # by hand for one channel: W * gamma / sqrt(var + eps), (b - mean) * gamma / sqrt(...) + beta
    bn, conv = model[1], model[0]
    f = float(bn.weight[2].detach() / torch.sqrt(bn.running_var[2] + bn.eps))
    assert torch.allclose(folded.weight[2], conv.weight[2] * f)
    assert float(folded.bias[2].detach()) == pytest.approx(
        float((conv.bias[2] - bn.running_mean[2]) * f + bn.bias[2]), rel=1e-6)


def test_fold_bn_matches_torch_fuse_conv_bn_eval():
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = _bn_model(3)
    mine, theirs = qc.fold_bn(model[0], model[1]), fuse_conv_bn_eval(model[0], model[1])
    assert torch.allclose(mine.weight, theirs.weight, atol=1e-7)
    assert torch.allclose(mine.bias, theirs.bias, atol=1e-7)


def test_fold_bn_bad_input():
    with pytest.raises(ValueError, match="4 channels"):
        qc.fold_bn(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(4))
    with pytest.raises(TypeError, match="BatchNorm2d"):
        qc.fold_bn(nn.Conv2d(1, 3, 3), nn.LayerNorm(3))


def test_conv_bn_qat_matches_torch_ao_conv_bn_in_training_and_eval():
    """PyTorch's own QAT ConvBn2d, with the same per-channel weight quantizer, gives the same
    output: BatchNorm statistics of the batch in training, the folded conv in eval."""
    from torch.ao.nn.intrinsic.qat import ConvBn2d
    from torch.ao.quantization import FakeQuantize as TorchFQ
    from torch.ao.quantization import MovingAveragePerChannelMinMaxObserver, QConfig

    model = _bn_model(1)
    x = torch.randn(8, 2, 5, 5)
    cfg = qc.LayerConfig(qc.QuantSpec(4, granularity="channel"))
    mine = qc.QATConvBn2d.from_float(model[0], model[1], cfg)
    wfq = TorchFQ.with_args(observer=MovingAveragePerChannelMinMaxObserver, quant_min=-7,
                            quant_max=7, dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                            averaging_constant=1.0)
    qconfig = QConfig(activation=nn.Identity, weight=wfq)
    theirs = ConvBn2d(2, 4, 3, padding=1, bias=True, qconfig=qconfig)
    theirs.weight.data.copy_(model[0].weight)
    theirs.bias.data.copy_(model[0].bias)
    theirs.bn.load_state_dict(model[1].state_dict())
    for mode in (True, False):
        mine.train(mode)
        theirs.train(mode)
        a, b = mine(x), theirs(x)
        assert torch.allclose(a, b, atol=1e-5), (mode, (a - b).abs().max())


def test_conv_bn_qat_eval_equals_its_folded_float_conv():
    model = _bn_model(2)
    x = torch.randn(5, 2, 5, 5)
    layer = qc.QATConvBn2d.from_float(model[0], model[1], qc.LayerConfig(qc.QuantSpec(3)))
    layer.eval()
    with torch.no_grad():
        out = layer(x)
        folded = layer.to_float()(x)
    assert torch.allclose(out, folded, atol=1e-5)
    # the folded weight is on a 3-bit grid: at most 7 distinct values per output channel
    w = layer.to_float().weight
    assert all(len(torch.unique(w[c])) <= 7 for c in range(w.shape[0]))


def test_freeze_bn_stats_stops_running_statistics():
    prepared = qc.prepare_qat(_bn_model(), qc.QuantConfig(), fuse={"0": "1"}).train()
    layer = prepared[0]
    mean0 = layer.bn.running_mean.clone()
    prepared(torch.randn(4, 2, 5, 5))
    assert not torch.equal(layer.bn.running_mean, mean0)
    assert qc.freeze_bn_stats(prepared) == 1
    prepared.train()
    mean1 = layer.bn.running_mean.clone()
    prepared(torch.randn(4, 2, 5, 5) + 3)
    assert torch.equal(layer.bn.running_mean, mean1)


# ---------------------------------------------------------------- the flow on the digits CNNs


def test_prepare_qat_at_start_equals_ptq_and_leaves_the_model_alone():
    cnn = qc.digits_cnn()
    before = _state(cnn)
    prepared = qc.prepare_qat(cnn, qc.QuantConfig(qc.LayerConfig(qc.QuantSpec(4))))
    assert _same_state(cnn, before)
    assert isinstance(prepared.conv1, qc.QATConv2d) and isinstance(prepared.fc2, qc.QATLinear)
    x = qc.digits_data()[2]
    with torch.no_grad():
        ptq = qc.quantize_model_weights(cnn, 4)(x)
        assert torch.allclose(prepared(x), ptq, atol=1e-5)
        assert torch.allclose(qc.convert_qat(prepared)(x), ptq, atol=1e-5)


def test_qat_fine_tune_changes_weights_and_convert_gives_plain_layers():
    qc.seed_everything(0)
    x, y, _, _ = qc.digits_data()
    prepared = qc.prepare_qat(qc.digits_cnn(), qc.QuantConfig(qc.LayerConfig(qc.QuantSpec(2))),
                              learnable=True).train()
    opt = torch.optim.Adam(prepared.parameters(), lr=1e-3)
    scale0 = prepared.fc1.weight_quant.scale.detach().clone()
    for idx in torch.randperm(len(x))[:256].split(64):
        loss = F.cross_entropy(prepared(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not torch.equal(prepared.fc1.weight_quant.scale.detach(), scale0)
    plain = qc.convert_qat(prepared)
    assert type(plain.conv1) is nn.Conv2d and type(plain.fc1) is nn.Linear
    assert not plain.training
    # 2-bit narrow grid: every output channel of fc1 holds at most 3 distinct values
    assert all(len(torch.unique(r)) <= 3 for r in plain.fc1.weight)


def test_digits_cnn_bn_loads_and_folds():
    model = qc.digits_cnn_bn()
    assert isinstance(model, qc.DigitsCNNBN) and not model.training
    assert qc.evaluate_digits(model) > 0.95
    prepared = qc.prepare_qat(model, qc.QuantConfig(qc.LayerConfig(qc.QuantSpec(8))),
                              fuse={"conv1": "bn1", "conv2": "bn2"})
    assert isinstance(prepared.bn1, nn.Identity) and isinstance(prepared.conv2, qc.QATConvBn2d)
    x = qc.digits_data()[2]
    with torch.no_grad():
        ref = model(x)
        plain = qc.convert_qat(prepared)
        assert type(plain.conv1) is nn.Conv2d and plain.conv1.bias is not None
        # 8-bit per-channel weights: logits within a few hundredths, predictions nearly all equal
        out = plain(x)
    assert float((out.argmax(1) == ref.argmax(1)).double().mean()) > 0.99
    assert float((out - ref).abs().max()) < 0.2


def test_input_quantizer_survives_convert_as_a_hook():
    cnn = qc.digits_cnn()
    cfg = qc.QuantConfig(qc.LayerConfig(qc.QuantSpec(8), qc.QuantSpec(4, symmetric=False,
                                                                       granularity="tensor")))
    prepared = qc.prepare_qat(cnn, cfg).train()
    x = qc.digits_data()[2]
    with torch.no_grad():
        prepared(x)
        prepared.eval()
        want = prepared(x)
        got = qc.convert_qat(prepared)(x)
    assert torch.allclose(got, want, atol=1e-5)
    qp = prepared.fc1.input_quant.qparams()
    assert qp.qmin == 0 and qp.qmax == 15


_W8A8 = qc.LayerConfig(qc.QuantSpec(8), qc.QuantSpec(8, symmetric=False, granularity="tensor"))


def test_freeze_observers_counts_and_needs_a_range():
    prepared = qc.prepare_qat(qc.digits_cnn(), qc.QuantConfig(_W8A8))
    with pytest.raises(RuntimeError, match="no range yet"):
        qc.freeze_observers(prepared)
    prepared(qc.digits_data()[2][:4])
    assert qc.freeze_observers(prepared) == 8
    assert not prepared.conv1.weight_quant.observer_enabled


# ---------------------------------------------------------------- bad input: nothing touched


@pytest.mark.parametrize("make_config, kwargs, exc, match", [
    (lambda: qc.QuantConfig(by_name={"conv9": qc.LayerConfig()}), {}, ValueError, "conv9"),
    (lambda: qc.QuantConfig(qc.LayerConfig(qc.QuantSpec("fp16"))), {}, ValueError,
     "float format"),
    (lambda: qc.QuantConfig(qc.LayerConfig(qc.QuantSpec(4, granularity="group", group_size=8))),
     {}, ValueError, "granularity"),
    (lambda: qc.QuantConfig(qc.LayerConfig(qc.QuantSpec(4), qc.QuantSpec(8, granularity="token"))),
     {}, ValueError, "activation granularity"),
    (lambda: qc.QuantConfig(), {"fuse": {"conv1": "bn7"}}, ValueError, "bn7"),
    (lambda: qc.QuantConfig(), {"fuse": {"conv1": "fc1"}}, TypeError, "BatchNorm2d"),
    (lambda: qc.QuantConfig(), {"fuse": {"conv1": "bn2"}}, ValueError, "32 channels"),
    (lambda: qc.QuantConfig(skip=("conv1",)), {"fuse": {"conv1": "bn1"}}, ValueError,
     "not a layer the config quantizes"),
    (lambda: qc.QuantConfig(), {"learnable": 1}, TypeError, "learnable"),
    (lambda: {"conv1": 4}, {}, TypeError, "QuantConfig"),
])
def test_prepare_qat_bad_input_raises_before_touching_the_model(make_config, kwargs, exc, match):
    model = qc.digits_cnn_bn()
    before = _state(model)
    modules = [type(m) for m in model.modules()]
    with pytest.raises(exc, match=match):
        qc.prepare_qat(model, make_config(), inplace=True, **kwargs)
    assert _same_state(model, before)
    assert [type(m) for m in model.modules()] == modules


def test_prepare_qat_refuses_a_prepared_model_and_convert_a_plain_one():
    prepared = qc.prepare_qat(qc.digits_cnn(), qc.QuantConfig())
    snapshot = copy.deepcopy(prepared.state_dict())
    with pytest.raises(ValueError, match="already prepared"):
        qc.prepare_qat(prepared, qc.QuantConfig(), inplace=True)
    assert _same_state(prepared, snapshot)
    with pytest.raises(ValueError, match="no QAT layers"):
        qc.convert_qat(qc.digits_cnn())
    with pytest.raises(RuntimeError, match="no range yet"):
        qc.convert_qat(qc.prepare_qat(qc.digits_cnn(), qc.QuantConfig(_W8A8)))


def test_retrain_writes_the_bn_variant_next_to_out(tmp_path):
    from quantcourse.models import main

    out = tmp_path / "plain.safetensors"
    assert main(["retrain", "--epochs", "1", "--out", str(out), "--min-accuracy", "0"]) == 0
    bn_path = tmp_path / "plain_bn.safetensors"
    assert bn_path.is_file()
    assert isinstance(qc.digits_cnn_bn(bn_path), qc.DigitsCNNBN)
    assert math.isfinite(qc.evaluate_digits(qc.digits_cnn_bn(bn_path)))
