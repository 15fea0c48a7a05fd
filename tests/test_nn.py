"""quantcourse.nn: unit, property (hypothesis), oracle (PyTorch) and bad-input tests of the
model-level helpers (layer selection, weight copies, input hooks, calibration, swaps, MACs)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import quantcourse as qc


class Tiny(nn.Module):
    """conv(1->4, 3x3, pad 1) -> relu -> pool 2 -> block(linear 64->8, relu, head linear 8->3)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.block = nn.Sequential(nn.Linear(64, 8), nn.ReLU())
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv(x))).flatten(1)
        return self.head(self.block(x))


def _tiny(seed: int = 0) -> Tiny:
    torch.manual_seed(seed)
    return Tiny().eval()


def _batch(n: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


# ---------------------------------------------------------------- seeding


def test_seed_everything_seeds_all_three_generators_and_threads():
    old = torch.get_num_threads()
    try:
        qc.seed_everything(3, threads=1)
        assert torch.get_num_threads() == 1
        a = (random.random(), float(np.random.rand()), float(torch.rand(())))
        random.seed(99)
        np.random.seed(99)
        torch.manual_seed(99)
        qc.seed_everything(3)
        b = (random.random(), float(np.random.rand()), float(torch.rand(())))
        random.seed(3)
        np.random.seed(3)
        torch.manual_seed(3)
        c = (random.random(), float(np.random.rand()), float(torch.rand(())))
        assert a == b == c
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("bad, err", [(-1, ValueError), (2**32, ValueError), (1.5, TypeError),
                                      (True, TypeError)])
def test_seed_everything_rejects_bad_seeds(bad, err):
    with pytest.raises(err, match="seed_everything"):
        qc.seed_everything(bad)


def test_seed_everything_rejects_zero_threads():
    with pytest.raises(ValueError, match="threads"):
        qc.seed_everything(0, threads=0)


# ---------------------------------------------------------------- which layers


def test_quantizable_layers_in_model_order_with_skip_and_names():
    m = _tiny()
    assert list(qc.quantizable_layers(m)) == ["conv", "block.0", "head"]
    assert qc.quantizable_layers(m)["block.0"] is m.block[0]
    assert list(qc.quantizable_layers(m, skip="head")) == ["conv", "block.0"]
    assert list(qc.quantizable_layers(m, skip=("conv", "block"))) == ["head"]
    assert list(qc.quantizable_layers(m, types=(nn.Linear,))) == ["block.0", "head"]
    assert list(qc.quantizable_layers(m, names=["head", "conv"])) == ["head", "conv"]
    assert list(qc.quantizable_layers(m, names="head")) == ["head"]


def test_quantizable_layers_bad_input():
    with pytest.raises(ValueError, match="'pool'"):
        qc.quantizable_layers(_tiny(), names=["conv", "pool"])
    with pytest.raises(TypeError, match="nn.Module"):
        qc.quantizable_layers(torch.zeros(3))


# ---------------------------------------------------------------- one tensor


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_quantize_weight_per_channel_matches_pytorch(bits, symmetric):
    w = torch.randn(6, 3, 3, 3, generator=torch.Generator().manual_seed(bits)) \
        * torch.linspace(0.05, 4, 6)[:, None, None, None]
    ours, qp = qc.quantize_weight(w, bits, granularity="channel", symmetric=symmetric)
    ref = torch.fake_quantize_per_channel_affine(w, qp.scale, qp.zero_point, 0, qp.qmin, qp.qmax)
    assert torch.equal(ours, ref)
    # the scale is the channel's own range: symmetric over qmax, asymmetric over the full grid
    flat = w.reshape(6, -1)
    if symmetric:
        expect = flat.abs().amax(dim=1) / (2 ** (bits - 1) - 1)
    else:
        expect = (flat.amax(dim=1).clamp(min=0) - flat.amin(dim=1).clamp(max=0)) / (2**bits - 1)
    torch.testing.assert_close(qp.scale, expect, rtol=1e-6, atol=0)


@pytest.mark.parametrize("symmetric", [True, False])
def test_quantize_weight_per_tensor_matches_pytorch(symmetric):
    w = torch.randn(7, 9, generator=torch.Generator().manual_seed(5)) + 0.3
    ours, qp = qc.quantize_weight(w, 4, granularity="tensor", symmetric=symmetric)
    ref = torch.fake_quantize_per_tensor_affine(w, float(qp.scale), int(qp.zero_point),
                                                qp.qmin, qp.qmax)
    assert torch.equal(ours, ref)


def test_quantize_weight_per_group_pads_and_matches_rowwise_groups():
    w = torch.randn(4, 2, 5, generator=torch.Generator().manual_seed(2))  # rows of 10 inputs
    ours, qp = qc.quantize_weight(w, 4, granularity="group", group_size=4)
    assert ours.shape == w.shape and qp.scale.shape == (4, 3)  # 10 inputs -> 3 groups of 4
    rows = w.reshape(4, -1)
    expect = torch.empty_like(rows)
    for r in range(4):
        for start in range(0, 10, 4):
            seg = rows[r, start:start + 4]
            s = float(seg.abs().max()) / 7
            expect[r, start:start + 4] = torch.fake_quantize_per_tensor_affine(seg, s, 0, -7, 7)
    assert torch.equal(ours.reshape(4, -1), expect)


@pytest.mark.parametrize("fmt, dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_quantize_weight_float_formats_are_round_trips(fmt, dtype):
    w = torch.randn(5, 5, generator=torch.Generator().manual_seed(0)) * 1e3
    out, qp = qc.quantize_weight(w, fmt)
    assert qp is None and out.dtype == torch.float32
    assert torch.equal(out, w.to(dtype).float())
    assert not torch.equal(out, w)


@pytest.mark.parametrize("kwargs, err, text", [
    ({"bits": 1}, ValueError, "between 2 and 16"),
    ({"bits": 17}, ValueError, "between 2 and 16"),
    ({"bits": True}, TypeError, "bits"),
    ({"bits": "fp8"}, ValueError, "bits"),
    ({"granularity": "row"}, ValueError, "granularity"),
    ({"granularity": "group"}, ValueError, "group_size"),
    ({"granularity": "channel", "group_size": 4}, ValueError, "group_size"),
    ({"granularity": "group", "group_size": 0}, ValueError, "group_size"),
    ({"symmetric": 1}, TypeError, "symmetric"),
])
def test_quantize_weight_bad_arguments(kwargs, err, text):
    with pytest.raises(err, match=text):
        qc.quantize_weight(torch.randn(4, 4), **kwargs)


def test_quantize_weight_bad_tensors():
    with pytest.raises(TypeError):
        qc.quantize_weight(torch.ones(4, 4, dtype=torch.int32))
    with pytest.raises(TypeError):
        qc.quantize_weight([[1.0]])
    with pytest.raises(ValueError, match="NaN"):
        qc.quantize_weight(torch.tensor([[1.0, float("nan")]]))


@given(rows=st.integers(1, 6), cols=st.integers(1, 20), bits=st.integers(2, 8),
       gran=st.sampled_from(["tensor", "channel", "group"]), symmetric=st.booleans(),
       group=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_quantize_weight_properties(rows, cols, bits, gran, symmetric, group, seed):
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))
    gs = group if gran == "group" else None
    out, qp = qc.quantize_weight(w, bits, granularity=gran, group_size=gs, symmetric=symmetric)
    assert out.shape == w.shape and out.dtype == w.dtype
    # idempotent: the grid's points are fixed points of the same scheme
    again, _ = qc.quantize_weight(out, bits, granularity=gran, group_size=gs, symmetric=symmetric)
    torch.testing.assert_close(again, out, rtol=1e-5, atol=1e-6)
    # within half a step of the input (min-max ranges clip nothing)
    step = qp.scale.max()
    assert float((out - w).abs().max()) <= float(step) / 2 * (1 + 1e-5) + 1e-7
    # the input is untouched
    assert torch.equal(w, torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)))


def test_quantize_weight_finer_granularity_is_never_worse_here():
    w = torch.randn(16, 64, generator=torch.Generator().manual_seed(0)) \
        * torch.logspace(-2, 1, 16)[:, None]
    err = {g: float((qc.quantize_weight(w, 4, granularity=g,
                                        group_size=16 if g == "group" else None)[0] - w)
                    .pow(2).mean()) for g in ("tensor", "channel", "group")}
    assert err["group"] < err["channel"] < err["tensor"]


# ---------------------------------------------------------------- dynamic activations


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [False, True])
def test_fake_quantize_dynamic_per_tensor_matches_pytorch(bits, symmetric):
    x = torch.randn(3, 5, 7, generator=torch.Generator().manual_seed(bits)) + 0.5
    make = qc.symmetric_qparams if symmetric else qc.asymmetric_qparams
    qp = make(x, bits)
    ref = torch.fake_quantize_per_tensor_affine(x, float(qp.scale), int(qp.zero_point),
                                                qp.qmin, qp.qmax)
    assert torch.equal(qc.fake_quantize_dynamic(x, bits, symmetric=symmetric), ref)


def test_fake_quantize_dynamic_asymmetric_default_uses_unsigned_range_of_x():
    x = torch.tensor([[0.0, 1.0, 2.55], [0.3, 0.7, 2.0]])
    out = qc.fake_quantize_dynamic(x, 8)  # range [0, 2.55] over 255 steps: step 0.01
    torch.testing.assert_close(out, torch.round(x / 0.01) * 0.01, rtol=0, atol=1e-6)


def test_fake_quantize_dynamic_per_token_is_each_row_on_its_own():
    x = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(0)) \
        * torch.logspace(-2, 1, 4)[None, :, None]
    out = qc.fake_quantize_dynamic(x, 4, granularity="token")
    for i in range(2):
        for t in range(4):
            assert torch.equal(out[i, t], qc.fake_quantize_dynamic(x[i, t], 4))
    whole = qc.fake_quantize_dynamic(x, 4)
    assert float((out - x).pow(2).mean()) < float((whole - x).pow(2).mean())


def test_fake_quantize_dynamic_formats_empty_and_bad_input():
    x = torch.randn(4, 4) * 100
    assert torch.equal(qc.fake_quantize_dynamic(x, "bf16"), x.bfloat16().float())
    empty = torch.empty(0, 8)
    out = qc.fake_quantize_dynamic(empty, 8)
    assert out.shape == (0, 8) and out is not empty
    assert qc.fake_quantize_dynamic(empty, 8, granularity="token").shape == (0, 8)
    with pytest.raises(ValueError, match="granularity"):
        qc.fake_quantize_dynamic(x, 8, granularity="channel")
    with pytest.raises(ValueError, match="0-d"):
        qc.fake_quantize_dynamic(torch.tensor(1.5), 8, granularity="token")
    assert float(qc.fake_quantize_dynamic(torch.tensor(1.5), 8)) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="NaN"):
        qc.fake_quantize_dynamic(torch.tensor([1.0, float("nan")]), 8)
    with pytest.raises(TypeError):
        qc.fake_quantize_dynamic(torch.ones(3, dtype=torch.int64), 8)


@given(n=st.integers(1, 40), bits=st.integers(2, 8), symmetric=st.booleans(),
       token=st.booleans(), seed=st.integers(0, 2**16))
def test_fake_quantize_dynamic_properties(n, bits, symmetric, token, seed):
    x = torch.randn(3, n, generator=torch.Generator().manual_seed(seed)) * 3
    gran = "token" if token else "tensor"
    out = qc.fake_quantize_dynamic(x, bits, symmetric=symmetric, granularity=gran)
    assert out.shape == x.shape
    lo, hi = float(x.min().clamp(max=0)), float(x.max().clamp(min=0))
    amax = float(x.abs().max())
    step = amax / (2 ** (bits - 1) - 1) if symmetric else (hi - lo) / (2**bits - 1)
    # a dynamic range clips nothing: every value is within half a step of the input (the
    # rounded zero point may shift the grid by up to half a step, never more)
    assert float((out - x).abs().max()) <= step / 2 * (1 + 1e-4) + 1e-6
    assert float(out.max()) <= hi + step / 2 * (1 + 1e-4) + 1e-6
    assert float(out.min()) >= lo - step / 2 * (1 + 1e-4) - 1e-6


# ---------------------------------------------------------------- specs and configs


def test_quantspec_weight_and_activation_delegate():
    w = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    spec = qc.QuantSpec(4, granularity="group", group_size=4)
    assert torch.equal(spec.weight(w), qc.quantize_weight(w, 4, granularity="group",
                                                          group_size=4)[0])
    assert spec.bits_per_value() == 4 and not spec.is_float
    assert qc.QuantSpec("fp16").bits_per_value() == 16 and qc.QuantSpec("fp16").is_float
    act = qc.QuantSpec(8, symmetric=False, granularity="token")
    assert torch.equal(act.activation(w), qc.fake_quantize_dynamic(w, 8, granularity="token"))
    with pytest.raises(ValueError, match="activations"):
        act.weight(w)
    with pytest.raises(ValueError, match="weights"):
        qc.QuantSpec(8).activation(w)


@pytest.mark.parametrize("kwargs", [
    {"bits": 1}, {"bits": "int4"}, {"granularity": "group"}, {"group_size": 8},
    {"granularity": "row"}, {"granularity": "group", "group_size": 0},
])
def test_quantspec_rejects_bad_fields(kwargs):
    with pytest.raises(ValueError):
        qc.QuantSpec(**kwargs)


def test_quantspec_symmetric_must_be_bool_and_spec_is_frozen():
    with pytest.raises(TypeError):
        qc.QuantSpec(symmetric="yes")
    with pytest.raises(AttributeError):
        qc.QuantSpec().bits = 4


def test_quantconfig_resolution_order_and_unknown_names():
    m = _tiny()
    w4 = qc.LayerConfig(qc.QuantSpec(4))
    lin = qc.LayerConfig(qc.QuantSpec(8), qc.QuantSpec(8, symmetric=False, granularity="tensor"))
    cfg = qc.QuantConfig(by_type={nn.Linear: lin}, by_name={"head": None, "conv": w4})
    out = cfg.resolve(m)
    assert out == {"conv": w4, "block.0": lin}  # head left float by name
    assert qc.QuantConfig().resolve(m) == dict.fromkeys(["conv", "block.0", "head"],
                                                          qc.LayerConfig())
    assert list(qc.QuantConfig(skip="block").resolve(m)) == ["conv", "head"]
    with pytest.raises(ValueError, match="'nope'"):
        qc.QuantConfig(by_name={"nope": w4}).resolve(m)
    with pytest.raises(TypeError, match="LayerConfig"):
        qc.QuantConfig(by_name={"conv": qc.QuantSpec(4)})
    with pytest.raises(TypeError, match="nn.Module classes"):
        qc.QuantConfig(by_type={int: w4})
    with pytest.raises(TypeError, match="QuantSpec"):
        qc.LayerConfig(weight=4)


# ---------------------------------------------------------------- model weights


def test_quantize_model_weights_copies_and_quantizes_each_layer():
    m = _tiny()
    before = _state(m)
    q = qc.quantize_model_weights(m, 4)
    assert q is not m and _same_state(_state(m), before)
    for name, layer in qc.quantizable_layers(m).items():
        ql = q.get_submodule(name)
        assert torch.equal(ql.weight, qc.quantize_weight(layer.weight.detach(), 4)[0])
        assert torch.equal(ql.bias, layer.bias)  # biases stay float
        assert not torch.equal(ql.weight, layer.weight)


def test_quantize_model_weights_per_layer_bits_layers_and_inplace():
    m = _tiny()
    q = qc.quantize_model_weights(m, {"head": 2, "conv": "fp16"})
    assert torch.equal(q.head.weight, qc.quantize_weight(m.head.weight.detach(), 2)[0])
    assert torch.equal(q.conv.weight, m.conv.weight.detach().half().float())
    assert torch.equal(q.block[0].weight, m.block[0].weight)  # not named: float
    q2 = qc.quantize_model_weights(m, 3, layers=["block.0"], granularity="tensor",
                                   symmetric=False)
    assert torch.equal(q2.block[0].weight, qc.quantize_weight(
        m.block[0].weight.detach(), 3, granularity="tensor", symmetric=False)[0])
    assert torch.equal(q2.head.weight, m.head.weight)
    expect = qc.quantize_weight(m.conv.weight.detach(), 8)[0]
    same = qc.quantize_model_weights(m, 8, layers=["conv"], inplace=True)
    assert same is m and torch.equal(m.conv.weight, expect)


def test_quantize_model_weights_bad_input_leaves_model_untouched():
    m = _tiny()
    before = _state(m)
    with pytest.raises(ValueError, match="'pool'"):
        qc.quantize_model_weights(m, {"pool": 4}, inplace=True)
    with pytest.raises(ValueError, match="between 2 and 16"):
        qc.quantize_model_weights(m, {"conv": 4, "head": 40}, inplace=True)
    with pytest.raises(ValueError, match="not both"):
        qc.quantize_model_weights(m, {"conv": 4}, layers=["conv"])
    with pytest.raises(TypeError, match="inplace"):
        qc.quantize_model_weights(m, 4, inplace=1)
    assert _same_state(_state(m), before)


def test_quantize_model_weights_keeps_gradients_flowing():
    q = qc.quantize_model_weights(_tiny(), 4)
    q(_batch()).sum().backward()
    assert all(p.grad is not None for p in q.parameters())


# ---------------------------------------------------------------- hooks


def test_input_hooks_see_and_replace_inputs_and_are_removed():
    m = _tiny()
    x = _batch()
    seen = []
    with qc.input_hooks(m, lambda n, layer, t: seen.append((n, tuple(t.shape)))) as same:
        y = m(x)
    assert same is m
    assert seen == [("conv", (5, 1, 8, 8)), ("block.0", (5, 64)), ("head", (5, 8))]
    assert torch.equal(y, m(x)) and _hook_count(m) == 0
    with qc.input_hooks(m, lambda n, layer, t: torch.zeros_like(t), ["head"]):
        y0 = m(x)
    assert torch.equal(y0, m.head.bias.expand(5, 3))


def test_input_hooks_removed_after_an_exception():
    m = _tiny()

    def boom(name, layer, x):
        raise RuntimeError("inside the hook")

    with pytest.raises(RuntimeError, match="inside the hook"), qc.input_hooks(m, boom):
        m(_batch())
    assert _hook_count(m) == 0
    with pytest.raises(KeyError), qc.input_hooks(m, lambda *a: None):
        raise KeyError("in the block")
    assert _hook_count(m) == 0
    with pytest.raises(TypeError, match="callable"):
        with qc.input_hooks(m, 3):
            pass
    with pytest.raises(ValueError, match="'pool'"):
        with qc.input_hooks(m, lambda *a: None, ["pool"]):
            pass
    assert _hook_count(m) == 0


def test_input_hooks_reject_a_non_tensor_replacement():
    m = _tiny()
    with pytest.raises(TypeError, match="tensor"), qc.input_hooks(m, lambda *a: "x"):
        m(_batch())
    assert _hook_count(m) == 0


def test_capture_inputs_last_and_all():
    m = _tiny()
    a, b = _batch(3, 1), _batch(4, 2)

    def run():
        m(a)
        m(b)

    last = qc.capture_inputs(m, run)
    assert list(last) == ["conv", "block.0", "head"]
    assert torch.equal(last["conv"], b)
    expect_head = m.block(torch.relu(m.pool(torch.relu(m.conv(b)))).flatten(1))
    torch.testing.assert_close(last["head"], expect_head)
    every = qc.capture_inputs(m, run, ["conv"], keep="all")
    assert list(every) == ["conv"] and [t.shape[0] for t in every["conv"]] == [3, 4]
    assert torch.equal(every["conv"][0], a)
    assert not last["head"].requires_grad and _hook_count(m) == 0
    with pytest.raises(ValueError, match="keep"):
        qc.capture_inputs(m, run, keep="first")


def test_capture_inputs_copies_the_tensor():
    m = nn.Sequential(nn.Linear(3, 3))
    x = torch.ones(2, 3)
    got = qc.capture_inputs(m, lambda: m(x))
    x.add_(1)
    assert torch.equal(got["0"], torch.ones(2, 3))


def test_calibrate_observes_every_layer_over_all_batches():
    m = _tiny()
    batches = [_batch(3, s) for s in range(4)]
    qps = qc.calibrate(m, lambda: qc.MinMaxObserver(8), batches)
    assert list(qps) == ["conv", "block.0", "head"] and _hook_count(m) == 0
    ins = qc.capture_inputs(m, lambda: [m(b) for b in batches], keep="all")
    for name, qp in qps.items():
        x = torch.cat([t.flatten() for t in ins[name]])
        ref = qc.asymmetric_qparams(x, 8)
        assert torch.equal(qp.scale, ref.scale) and torch.equal(qp.zero_point, ref.zero_point)
    # a subset of layers and a custom run function
    one = qc.calibrate(m, lambda: qc.MinMaxObserver(4), [(b,) for b in batches],
                       layers=["head"], run=lambda item: m(*item))
    assert list(one) == ["head"] and one["head"].qmax == 15


def test_calibrate_empty_iterable_and_bad_arguments():
    m = _tiny()
    with pytest.raises(ValueError, match="no calibration batches"):
        qc.calibrate(m, lambda: qc.MinMaxObserver(8), [])
    with pytest.raises(ValueError, match="no calibration batches"):
        qc.calibrate(m, lambda: qc.MinMaxObserver(8), iter(()))
    with pytest.raises(TypeError, match="callable"):
        qc.calibrate(m, qc.MinMaxObserver(8), [_batch()])  # an observer, not a maker
    by_class = qc.calibrate(m, qc.MinMaxObserver, [_batch()])  # a class makes fresh ones
    assert by_class["head"].qmax == 255
    assert _hook_count(m) == 0


def test_calibrate_removes_hooks_when_a_batch_fails():
    m = _tiny()

    def batches():
        yield _batch()
        raise RuntimeError("data loader failed")

    with pytest.raises(RuntimeError, match="data loader failed"):
        qc.calibrate(m, lambda: qc.MinMaxObserver(8), batches())
    assert _hook_count(m) == 0
    with pytest.raises(ValueError, match="NaN"):
        qc.calibrate(m, lambda: qc.MinMaxObserver(8), [torch.full((1, 1, 8, 8), float("nan"))])
    assert _hook_count(m) == 0


def test_calibrate_does_not_change_outputs_even_if_observe_returns_something():
    class Chatty(qc.MinMaxObserver):
        def observe(self, x):
            super().observe(x)
            return self  # a fluent observer must not replace the layer's input

    m = _tiny()
    x = _batch()
    qps = qc.calibrate(m, lambda: Chatty(8), [x])
    assert set(qps) == {"conv", "block.0", "head"}


def test_quantized_inputs_static_matches_hand_written_hooks():
    m = _tiny()
    x = _batch(6, 3)
    qps = qc.calibrate(m, lambda: qc.MinMaxObserver(4), [_batch(16, 4)])
    with qc.quantized_inputs(m, qps):
        ours = m(x)
    assert _hook_count(m) == 0
    h = m.pool(torch.relu(m.conv(qc.fake_quantize(x, qps["conv"])))).flatten(1)
    h = m.block[1](m.block[0](qc.fake_quantize(h, qps["block.0"])))
    ref = m.head(qc.fake_quantize(h, qps["head"]))
    assert torch.equal(ours, ref)
    with qc.quantized_inputs(m, qps, ["head"]):
        only_head = m(x)
    assert torch.equal(only_head, m.head(qc.fake_quantize(m.block(
        m.pool(torch.relu(m.conv(x))).flatten(1)), qps["head"])))


def test_quantized_inputs_dynamic_and_bad_arguments():
    m = _tiny()
    x = _batch()
    with qc.quantized_inputs(m, lambda t: qc.fake_quantize_dynamic(t, 8), ["conv"]):
        ours = m(x)
    assert torch.equal(ours, m(qc.fake_quantize_dynamic(x, 8)))
    with pytest.raises(ValueError, match="no QParams for 'head'"):
        with qc.quantized_inputs(m, {"conv": qc.asymmetric_qparams(x, 8)}, ["conv", "head"]):
            pass
    with pytest.raises(TypeError, match="quantizer"):
        with qc.quantized_inputs(m, 8):
            pass
    with pytest.raises(ZeroDivisionError), qc.quantized_inputs(m, lambda t: t):
        _ = 1 / 0
    assert _hook_count(m) == 0


# ---------------------------------------------------------------- swaps and MACs


def test_swap_layers_leaves_the_original_untouched():
    m = _tiny()
    before = _state(m)
    x = _batch()
    y = m(x)
    seen = []

    def make(name, layer):
        seen.append(name)
        if isinstance(layer, nn.Linear):
            new = nn.Linear(layer.in_features, layer.out_features, bias=False)
            new.weight.data.zero_()
            return new
        return None

    s = qc.swap_layers(m, make)
    assert seen == ["conv", "block.0", "head"]
    assert isinstance(s.conv, nn.Conv2d) and s.head.bias is None and s.block[0].bias is None
    assert torch.equal(s(x), torch.zeros(5, 3))
    assert _same_state(_state(m), before) and torch.equal(m(x), y)
    assert m.head.bias is not None and s.conv is not m.conv


def test_swap_layers_inplace_subset_and_bad_make():
    m = _tiny()
    ident = nn.Identity()
    out = qc.swap_layers(m, lambda n, layer: ident, ["block.0"], inplace=True)
    assert out is m and m.block[0] is ident
    with pytest.raises(TypeError, match="expected an nn.Module or None"):
        qc.swap_layers(m, lambda n, layer: 3)
    with pytest.raises(ValueError, match="'pool'"):
        qc.swap_layers(m, lambda n, layer: None, ["pool"])


def test_count_macs_by_hand():
    m = _tiny()
    x = _batch(2)
    macs, shapes = qc.count_macs(m, lambda: m(x))
    # conv: 2 images x 4 channels x 8 x 8 outputs, each 1 x 3 x 3 products
    assert macs == {"conv": 2 * 4 * 64 * 9, "block.0": 2 * 8 * 64, "head": 2 * 3 * 8}
    assert shapes == {"conv": (2, 1, 8, 8), "block.0": (2, 64), "head": (2, 8)}
    assert _hook_count(m) == 0


def test_count_macs_grouped_conv_tokens_and_repeated_calls():
    conv = nn.Conv2d(4, 6, (3, 1), stride=2, groups=2)  # 2 inputs per group, 3x1 kernel
    lin = nn.Linear(5, 7)
    m = nn.ModuleDict({"conv": conv, "lin": lin})
    x = torch.randn(1, 4, 9, 4)
    t = torch.randn(2, 3, 5)  # 2 sequences x 3 tokens

    def run():
        conv(x)
        lin(t)
        lin(t[:, :1])

    macs, shapes = qc.count_macs(m, run)
    assert macs["conv"] == 6 * 4 * 2 * (2 * 3 * 1)  # out (1, 6, 4, 2)
    assert macs["lin"] == (2 * 3 + 2 * 1) * 5 * 7
    assert shapes["lin"] == (2, 3, 5)  # the first call's input
    assert sum(len(mod._forward_hooks) for mod in m.modules()) == 0


def test_count_macs_removes_hooks_after_an_exception():
    m = _tiny()

    def run():
        m(_batch())
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        qc.count_macs(m, run)
    assert _hook_count(m) == 0


def test_count_macs_matches_digits_cnn_by_hand():
    cnn = qc.digits_cnn()
    x = torch.zeros(3, 1, 8, 8)
    macs, shapes = qc.count_macs(cnn, lambda: cnn(x))
    # conv1 1->16 and conv2 16->32 (3x3, padding 1) on 8x8, pool, fc1 512->64, fc2 64->10
    assert macs == {"conv1": 3 * 16 * 64 * 9, "conv2": 3 * 32 * 64 * 16 * 9,
                    "fc1": 3 * 512 * 64, "fc2": 3 * 64 * 10}
    assert shapes["fc1"] == (3, 512)


def test_capture_inputs_of_other_module_types():
    m = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2))
    ids = torch.tensor([[1, 2, 0], [3, 0, 0]])
    got = qc.capture_inputs(m, lambda: m(ids), ["0", "1"], types=(nn.Embedding, nn.Linear))
    assert torch.equal(got["0"], ids) and got["1"].shape == (2, 3, 4)
    assert list(qc.capture_inputs(m, lambda: m(ids))) == ["1"]  # default: quantizable layers
    with pytest.raises(ValueError, match="'0'"):
        qc.capture_inputs(m, lambda: m(ids), ["0"])


def test_quantize_model_weights_of_embedding_tables_per_row():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Embedding(6, 4), nn.Linear(4, 2))
    q = qc.quantize_model_weights(m, 4, types=(nn.Embedding, nn.Linear))
    table = m[0].weight.detach()
    scale = table.abs().amax(dim=1, keepdim=True) / 7
    assert torch.equal(q[0].weight, torch.clamp(torch.round(table * (1 / scale)), -7, 7) * scale)
    assert torch.equal(qc.quantize_model_weights(m, 4)[0].weight, m[0].weight)  # default: linear


def test_observe_inputs_feeds_each_layer_its_own_observer_and_counts_batches():
    class Recorder:
        def __init__(self):
            self.seen = []

        def observe(self, x):
            self.seen.append(x.detach().clone())

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    observers = {"0": Recorder(), "2": Recorder()}
    batches = [torch.randn(5, 3), torch.randn(2, 3)]
    assert qc.observe_inputs(model, observers, batches) == 2
    assert [t.shape for t in observers["0"].seen] == [(5, 3), (2, 3)]
    assert torch.equal(observers["0"].seen[1], batches[1])
    assert torch.equal(observers["2"].seen[0], torch.relu(model[0](batches[0])).detach())
    assert not model[0]._forward_pre_hooks and not model[2]._forward_pre_hooks
    with pytest.raises(ValueError, match="no calibration batches"):
        qc.observe_inputs(model, observers, [])


def test_capture_call_returns_the_first_call_and_stops_the_run():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    x = torch.randn(5, 3)
    after = []
    model[2].register_forward_hook(lambda *a: after.append(1))
    args, kwargs = qc.capture_call(model[2], lambda: model(x))
    assert kwargs == {} and len(args) == 1
    assert torch.equal(args[0], torch.relu(model[0](x)).detach())
    assert after == []                                   # stopped before the layer ran
    assert not model[2]._forward_pre_hooks
    args2, _ = qc.capture_call(model[0], lambda: (model(x), model(2 * x)), stop=False)
    assert torch.equal(args2[0], x) and after == [1, 1]  # first call kept; the run completed
    with pytest.raises(RuntimeError, match="never called"):
        qc.capture_call(torch.nn.Linear(2, 2), lambda: model(x))
    with pytest.raises(TypeError):
        qc.capture_call(lambda: None, lambda: model(x))
