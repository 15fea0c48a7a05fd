"""quantcourse.ptq: static and dynamic post-training quantization flows."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import quantcourse as qc


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 5)).eval()


def _batches(n: int = 3, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(8, 12, generator=g) * 2 for _ in range(n)]


W8A8 = qc.QuantConfig(qc.LayerConfig(qc.QuantSpec(8),
                                     qc.QuantSpec(8, symmetric=False, granularity="tensor")))


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same_state(model, state):
    now = model.state_dict()
    return set(now) == set(state) and all(torch.equal(now[k], v) for k, v in state.items())


# ---------------------------------------------------------------- oracles (PyTorch's own ops)


def test_static_linear_matches_pytorch_fake_quant_ops():
    net = nn.Sequential(nn.Linear(12, 7)).eval()
    batches = _batches()
    q = qc.quantize_static(net, W8A8, batches)
    # the range PyTorch's MinMaxObserver (quint8, per tensor affine) would keep, widened to 0
    lo = min(float(b.min()) for b in batches)
    hi = max(float(b.max()) for b in batches)
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255
    zp = int(min(max(round(-lo / scale), 0), 255))
    w = net[0].weight.detach()
    w_scale = w.abs().amax(dim=1) / 127
    w_hat = torch.fake_quantize_per_channel_affine(w, w_scale, torch.zeros(7, dtype=torch.int32),
                                                   0, -127, 127)
    x = torch.randn(20, 12) * 3
    x_hat = torch.fake_quantize_per_tensor_affine(x, scale, zp, 0, 255)
    want = torch.nn.functional.linear(x_hat, w_hat, net[0].bias)
    with torch.no_grad():
        got = q(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert q[0].input_qparams.zero_point.item() == zp


def test_dynamic_per_token_matches_rowwise_pytorch_fake_quant():
    net = nn.Sequential(nn.Linear(12, 4)).eval()
    config = qc.QuantConfig(qc.LayerConfig(None, qc.QuantSpec(8, symmetric=False,
                                                              granularity="token")))
    q = qc.quantize_dynamic(net, config)
    x = torch.randn(3, 5, 12)
    rows = x.reshape(-1, 12)
    lo = rows.amin(dim=1).clamp(max=0)
    hi = rows.amax(dim=1).clamp(min=0)
    scale = (hi - lo) / 255
    zp = torch.clamp(torch.round(-lo / scale), 0, 255).to(torch.int32)
    rows_hat = torch.fake_quantize_per_channel_affine(rows, scale, zp, 0, 0, 255)
    want = net(rows_hat.reshape(x.shape))
    with torch.no_grad():
        got = q(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_pytorch_dynamic_int8_is_per_tensor_weights_and_7_bit_inputs():
    net = nn.Sequential(nn.Linear(32, 8)).eval()
    tq, why = qc.torch_dynamic_int8(net)
    if tq is None:
        pytest.skip(f"PyTorch's dynamic int8 is unavailable here: {why}")
    assert why == "" and net[0].__class__ is nn.Linear  # the original is untouched
    sim = qc.quantize_dynamic(net, qc.QuantConfig(qc.LayerConfig(
        qc.QuantSpec(8, granularity="tensor"), qc.QuantSpec(7, symmetric=False,
                                                            granularity="tensor"))))
    x = torch.randn(16, 32)
    with torch.no_grad():
        ref, real, fake = net(x), tq(x), sim(x)
    # the simulation is much closer to PyTorch's layer than either is to float
    assert (real - fake).abs().max() < 0.5 * (real - ref).abs().max()


# ---------------------------------------------------------------- behaviour


def test_original_untouched_and_inplace_returns_the_model():
    net = _net()
    state = _state(net)
    q = qc.quantize_static(net, W8A8, _batches())
    assert q is not net and _same_state(net, state)
    assert set(qc.quantized_layers(q)) == {"0", "2"}
    assert all(isinstance(m, nn.Linear) for m in (net[0], net[2]))
    q2 = qc.quantize_dynamic(net, W8A8, inplace=True)
    assert q2 is net and isinstance(net[0], qc.QuantizedLayer)


def test_layers_configured_none_stay_float_and_modes_are_reported():
    net = _net()
    config = qc.QuantConfig(qc.LayerConfig(qc.QuantSpec(4)), by_name={"2": None})
    q = qc.quantize_dynamic(net, config)
    assert isinstance(q[2], nn.Linear) and q[0].mode == "weight-only"
    assert torch.equal(q[2].weight, net[2].weight)
    # weight-only = nn.quantize_model_weights on the same layer
    ref = qc.quantize_model_weights(net, 4, layers=["0"])
    torch.testing.assert_close(q[0].layer.weight, ref[0].weight, rtol=0, atol=0)
    s = qc.quantize_static(net, W8A8, _batches())
    assert s[0].mode == "static" and "static" in repr(s)
    d = qc.quantize_dynamic(net, W8A8)
    assert d[0].mode == "dynamic"


def test_run_receives_the_copy_and_observers_come_from_make_observer():
    net = _net()
    seen, made = [], []

    def run(model, batch):
        seen.append(model)
        return model(batch["x"])

    def make(spec):
        made.append(spec.bits)
        return qc.PercentileObserver(spec.bits, percentile=99.0)

    q = qc.quantize_static(net, W8A8, [{"x": b} for b in _batches()], run=run,
                           make_observer=make)
    assert seen and all(m is q for m in seen) and made == [8, 8]


def test_calibration_reads_a_generator_once():
    net = _net()
    q = qc.quantize_static(net, W8A8, (b for b in _batches(2)))
    assert q[0].input_qparams is not None


def test_more_minmax_calibration_never_narrows_the_range():
    net = _net()
    few = qc.quantize_static(net, W8A8, _batches(1))
    many = qc.quantize_static(net, W8A8, _batches(4))
    assert float(many[0].input_qparams.scale) >= float(few[0].input_qparams.scale)


def test_progress_bar_option(capsys):
    q = qc.quantize_static(_net(), W8A8, _batches(2), progress=True)
    assert "calibrating" in capsys.readouterr().err and q[0].mode == "static"


def test_ptq_model_nbytes_counts_packed_weights_and_scales():
    net = _net()
    q = qc.quantize_dynamic(net, qc.QuantConfig(qc.LayerConfig(qc.QuantSpec(4))))
    # 12*16 and 16*5 4-bit codes, one float32 scale per output row, float32 biases
    want = (12 * 16 * 4 // 8 + 16 * 4) + (16 * 5 * 4 // 8 + 5 * 4) + (16 + 5) * 4
    assert qc.ptq_model_nbytes(q) == want
    assert qc.ptq_model_nbytes(net) == (12 * 16 + 16 + 16 * 5 + 5) * 4
    assert qc.serialized_nbytes(net) > (12 * 16 + 16 * 5) * 4


@settings(max_examples=40, deadline=None)
@given(bits=st.integers(2, 8), scale=st.floats(0.01, 100.0), seed=st.integers(0, 10_000))
def test_static_inputs_lie_on_the_frozen_grid(bits, scale, seed):
    g = torch.Generator().manual_seed(seed)
    calib = [torch.randn(6, 12, generator=g) * scale for _ in range(2)]
    config = qc.QuantConfig(qc.LayerConfig(None, qc.QuantSpec(bits, symmetric=False,
                                                              granularity="tensor")))
    layer = qc.quantize_static(_net(), config, calib)[0]
    qp = layer.input_qparams
    x = torch.cat(calib)                     # inside the calibrated range: no clipping
    x_hat = layer.quantize_input(x)
    assert len(torch.unique(x_hat)) <= 2**bits
    assert float((x_hat - x).abs().max()) <= float(qp.scale) * 0.5 * (1 + 1e-4)


# ---------------------------------------------------------------- bad input


BAD_CONFIGS = [
    (qc.QuantConfig(by_name={"7": None}), ValueError, "no quantizable layer named '7'"),
    (qc.QuantConfig(qc.LayerConfig(qc.QuantSpec(8, granularity="token"))), ValueError,
     "not per token"),
    (qc.QuantConfig(qc.LayerConfig(None, qc.QuantSpec(8, granularity="channel"))), ValueError,
     "activation granularity 'channel'"),
]


@pytest.mark.parametrize("config, error, message", BAD_CONFIGS)
@pytest.mark.parametrize("flow", ["static", "dynamic"])
@pytest.mark.parametrize("inplace", [False, True])
def test_bad_config_fails_before_any_work(config, error, message, flow, inplace):
    net = _net()
    state = _state(net)
    calls = []

    def make(spec):
        calls.append(spec)
        return qc.MinMaxObserver(spec.bits)

    with pytest.raises(error, match=message):
        if flow == "static":
            qc.quantize_static(net, config, _batches(), make_observer=make, inplace=inplace)
        else:
            qc.quantize_dynamic(net, config, inplace=inplace)
    assert _same_state(net, state) and not calls


def test_static_token_activations_point_to_the_dynamic_flow():
    config = qc.QuantConfig(qc.LayerConfig(None, qc.QuantSpec(8, granularity="token")))
    with pytest.raises(ValueError, match="quantize_dynamic"):
        qc.quantize_static(_net(), config, _batches())
    assert isinstance(qc.quantize_dynamic(_net(), config)[0], qc.QuantizedLayer)


@pytest.mark.parametrize("batches", [[], iter([]), ()])
def test_no_calibration_data_is_an_error_and_the_model_is_untouched(batches):
    net = _net()
    state = _state(net)
    with pytest.raises(ValueError, match="no calibration batches"):
        qc.quantize_static(net, W8A8, batches, inplace=True)
    assert _same_state(net, state) and isinstance(net[0], nn.Linear)


def test_unsupported_bits_cannot_even_be_configured():
    for bits in (1, 17, "int4"):
        with pytest.raises((ValueError, TypeError)):
            qc.QuantSpec(bits)


@pytest.mark.parametrize("bad, error, message", [
    ({"make_observer": lambda spec: object()}, TypeError, "observe"),
    ({"make_observer": 3}, TypeError, "callable"),
    ({"run": "encode"}, TypeError, "callable"),
    ({"progress": 1}, TypeError, "progress"),
])
def test_bad_arguments_fail_before_any_work(bad, error, message):
    net = _net()
    state = _state(net)
    with pytest.raises(error, match=message):
        qc.quantize_static(net, W8A8, _batches(), inplace=True, **bad)
    assert _same_state(net, state)


def test_bad_model_config_and_batches_types():
    with pytest.raises(TypeError, match="nn.Module"):
        qc.quantize_dynamic("model", W8A8)
    with pytest.raises(TypeError, match="QuantConfig"):
        qc.quantize_dynamic(_net(), qc.LayerConfig())
    with pytest.raises(TypeError, match="wrap a single batch"):
        qc.quantize_static(_net(), W8A8, torch.randn(4, 12))
    with pytest.raises(TypeError, match="inplace"):
        qc.quantize_dynamic(_net(), W8A8, inplace="yes")


def test_quantizing_twice_is_refused():
    q = qc.quantize_dynamic(_net(), W8A8)
    state = _state(q)
    with pytest.raises(ValueError, match="already quantized"):
        qc.quantize_static(q, W8A8, _batches())
    assert _same_state(q, state)


def test_a_failing_calibration_run_leaves_an_inplace_model_without_hooks():
    net = _net()
    state = _state(net)

    def run(model, batch):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        qc.quantize_static(net, W8A8, _batches(), run=run, inplace=True)
    assert _same_state(net, state) and not net[0]._forward_pre_hooks
    assert isinstance(net[0], nn.Linear)


def test_deepcopy_of_a_quantized_model_keeps_its_grids():
    q = qc.quantize_static(_net(), W8A8, _batches())
    q2 = copy.deepcopy(q)
    x = torch.randn(4, 12)
    with torch.no_grad():
        assert torch.equal(q(x), q2(x))
