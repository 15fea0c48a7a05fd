"""quantcourse.qlinear and linear_kernels: quantized linear layers vs their fake-quantized
simulation, the registry of layer classes, and safetensors round trips."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

import quantcourse as qc
from quantcourse import kernels as K
from quantcourse import linear_kernels as LK
from quantcourse import qlinear as Q
from tests.int8_cases import INPUT_SHAPES, METHOD_NAMES, METHODS, make_linear
from tests.oracles import w8a8_simulation

# ---------------------------------------------------------------------------- devices


@pytest.mark.parametrize("cls", ["W8A8Linear", "W8A16Linear", "W4A16Linear"])
def test_layers_on_device_match_cpu(device, cls):
    torch.manual_seed(5)
    lin = torch.nn.Linear(256, 40)
    x = torch.randn(3, 17, 256)
    layer = getattr(Q, cls).from_float(lin).to(device)
    with torch.no_grad():
        out = layer(x.to(device))
    assert out.device.type == torch.device(device).type
    # An independent float64 reference on the CPU, built from the float layer (not from the
    # moved layer, which on device="cpu" is the same object): the fake-quantized simulation.
    w, b = lin.weight.detach().double(), lin.bias.detach().double()
    if cls == "W8A8Linear":
        ref, _ = w8a8_simulation(lin, x, layer.act_bits)
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

@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", INPUT_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("method", METHODS)
def test_w8a8_matches_fake_quant_simulation(shape, bias, method):
    lin = make_linear(256, 48, bias=bias, seed=len(shape))
    layer = Q.W8A8Linear.from_float(lin, method=method)
    x = torch.randn(shape) * 2
    with torch.no_grad():
        out = layer(x)
    assert layer.act_bits == K.int8_activation_bits("cpu", method)
    sim, bound = w8a8_simulation(lin, x, layer.act_bits)
    assert out.shape == sim.shape and out.dtype == torch.float32
    err = (out.double() - sim).abs()
    assert bool((err <= bound).all()), float((err / bound).max())


@pytest.mark.parametrize("act_bits", [7, 8])
def test_w8a8_paths_are_bit_identical_for_each_activation_grid(act_bits):
    # Every path computes the same int32 sums and rescales them alike: equal to the last bit.
    lin = make_linear(300, 24, seed=act_bits)
    x = torch.randn(9, 300) * 3
    with torch.no_grad():
        outs = {m: Q.W8A8Linear.from_float(lin, method=m, act_bits=act_bits)(x)
                for m in METHOD_NAMES}
    sim, bound = w8a8_simulation(lin, x, act_bits)
    assert bool(((outs["float"].double() - sim).abs() <= bound).all())
    for m, out in outs.items():
        assert torch.equal(out, outs["float"]), m


def test_w8a8_seven_bit_grid_is_its_own_definition():
    # A 7-bit layer matches the 7-bit simulation and fails the 8-bit one (and vice versa).
    lin = make_linear(256, 32, seed=11)
    x = torch.randn(6, 256)
    with torch.no_grad():
        out7 = Q.W8A8Linear.from_float(lin, act_bits=7)(x).double()
        out8 = Q.W8A8Linear.from_float(lin, act_bits=8)(x).double()
    for out, bits in ((out7, 7), (out8, 8)):
        sim, bound = w8a8_simulation(lin, x, bits)
        other, obound = w8a8_simulation(lin, x, 15 - bits)
        assert bool(((out - sim).abs() <= bound).all())
        assert not bool(((out - other).abs() <= obound).all())


def test_w8a8_records_its_grid_and_path():
    lin = make_linear(64, 8)
    layer = Q.W8A8Linear.from_float(lin)
    assert layer.act_bits == K.int8_activation_bits()
    assert layer.path == K.int8_matmul_path(prepacked=True)
    assert f"act_bits={layer.act_bits}" in repr(layer) and f"path='{layer.path}'" in repr(layer)
    forced = Q.W8A8Linear.from_float(lin, method="float", act_bits=7)
    assert (forced.act_bits, forced.path) == (7, "float")
    for bad in (6, 9, True, "8"):
        with pytest.raises(ValueError, match="act_bits"):
            Q.W8A8Linear.from_float(lin, act_bits=bad)
    with pytest.raises(ValueError, match="act_bits"):
        LK.w8a8_linear(torch.randn(2, 64), layer.weight_q, layer.weight_scale, act_bits=4)


@pytest.mark.skipif("fbgemm" not in METHOD_NAMES, reason="no exact fbgemm engine here")
def test_w8a8_fbgemm_repacks_after_weight_changes():
    lin, other = make_linear(128, 16, seed=1), make_linear(128, 16, seed=2)
    layer = Q.W8A8Linear.from_float(lin, method="fbgemm")
    ref = Q.W8A8Linear.from_float(other, method="float", act_bits=layer.act_bits)
    x = torch.randn(5, 128)
    with torch.no_grad():
        first = layer(x)
        layer.load_state_dict(ref.state_dict())      # in-place copies into the buffers
        assert torch.equal(layer(x), ref(x)) and not torch.equal(layer(x), first)
        layer.weight_q.mul_(-1)                       # an in-place edit of the codes
        ref.weight_q.mul_(-1)
        assert torch.equal(layer(x), ref(x))
        twin = copy.deepcopy(layer)                   # packs its own copy
        assert torch.equal(twin(x), ref(x))
        twin.weight_q = torch.zeros_like(twin.weight_q)   # a new buffer: packed again
        assert torch.equal(twin(x), twin.bias.expand(5, -1))
        assert torch.equal(layer(x), ref(x))
    with torch.inference_mode():                      # buffers without a version counter
        built = Q.W8A8Linear.from_float(lin, method="fbgemm")
        assert torch.equal(built(x), Q.W8A8Linear.from_float(
            lin, method="float", act_bits=built.act_bits)(x))
        built.load_state_dict(ref.state_dict())
        assert torch.equal(built(x), ref(x))


def test_w8a8_simulation_check_can_fail():
    # Leaving the activations unquantized (a W8A16 layer) breaks the W8A8 bound.
    lin = make_linear(256, 48)
    x = torch.randn(7, 256)
    with torch.no_grad():
        out = Q.W8A16Linear.from_float(lin)(x)
    sim, bound = w8a8_simulation(lin, x)
    assert not bool(((out.double() - sim).abs() <= bound).all())


def test_w8a8_functional_fused_rescale_by_hand():
    lin = make_linear(64, 8)
    x = torch.randn(3, 64)
    layer = Q.W8A8Linear.from_float(lin)
    x_q, qp_x = LK.quantize_per_token(x)
    acc = K.int8_matmul_reference(x_q, layer.weight_q.t())
    expect = acc.float() * (qp_x.scale[:, None] * layer.weight_scale[None, :]) + lin.bias.detach()
    out = LK.w8a8_linear(x, layer.weight_q, layer.weight_scale, lin.bias.detach())
    assert torch.equal(out, expect)


def test_quantize_per_token_one_scale_per_row():
    x = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0], [127.0, 1.0, -127.0]])
    q, qp = LK.quantize_per_token(x.reshape(3, 1, 3))
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
    q, qp = LK.quantize_per_token(x)
    assert torch.equal(q, qc.quantize(x, qp))
    assert q.dtype == torch.int8 and q.abs().max() <= 127


def _weight_only_paths():
    # the fbgemm path where this build has it, always the plain dequantize path
    return ["auto", "dequantize"]


def _check_weight_only(layer, x, w_hat, bias):
    """The dequantize path is the simulation bit for bit; the fbgemm path (codes in fp16,
    scales after the float32 sums) equals it to float32 rounding, against a float64 oracle
    that the float layer itself misses by far."""
    bias = None if bias is None else bias.detach()
    with torch.no_grad():
        out = layer(x)
        sim = torch.nn.functional.linear(x, w_hat, bias)
    if layer.path == "dequantize":
        assert torch.equal(out, sim)
    else:
        ref = torch.nn.functional.linear(x.double(), w_hat.double(),
                                         None if bias is None else bias.double())
        scale = float(ref.abs().max())
        assert float((out.double() - ref).abs().max()) <= 4e-6 * scale
        assert float((sim.double() - ref).abs().max()) <= 4e-6 * scale
    assert out.shape == sim.shape and out.dtype == x.dtype


@pytest.mark.parametrize("method", _weight_only_paths())
@pytest.mark.parametrize("group_size", [None, 64, 256])
@pytest.mark.parametrize("shape", INPUT_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_w8a16_matches_fake_quant_simulation(shape, group_size, method):
    lin = make_linear(256, 40, seed=1)
    layer = Q.W8A16Linear.from_float(lin, group_size=group_size, method=method)
    x = torch.randn(shape)
    w = lin.weight.detach()
    qp = (qc.symmetric_qparams(w, 8, axis=0) if group_size is None
          else qc.symmetric_qparams(w, 8, group_size=group_size))
    _check_weight_only(layer, x, qc.fake_quantize(w, qp), lin.bias)
    assert layer.weight_q.dtype == torch.int8


@pytest.mark.parametrize("method", _weight_only_paths())
@pytest.mark.parametrize("group_size", [128, 32, 256])
@pytest.mark.parametrize("shape", INPUT_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_w4a16_matches_fake_quant_simulation(shape, group_size, method):
    lin = make_linear(256, 40, bias=group_size != 32, seed=2)
    layer = Q.W4A16Linear.from_float(lin, group_size=group_size, method=method)
    x = torch.randn(shape)
    w = lin.weight.detach()
    qp = qc.symmetric_qparams(w, 4, group_size=group_size)
    _check_weight_only(layer, x, qc.fake_quantize(w, qp), lin.bias)
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
    checked = LK.weight_only_linear(x, q, qp, b)
    fast = LK.weight_only_linear(x, q, qp, b, check_codes=False)
    sim = torch.nn.functional.linear(x, qc.fake_quantize(w, qp), b)
    assert torch.equal(checked, sim) and torch.equal(fast, sim)


def test_weight_only_linear_checks_codes():
    w = torch.randn(4, 8)
    qp = qc.symmetric_qparams(w, 4, axis=0)
    bad = torch.full((4, 8), 9, dtype=torch.int8)
    with pytest.raises(ValueError, match="outside the grid"):
        LK.weight_only_linear(torch.randn(2, 8), bad, qp)
    with pytest.raises(TypeError, match="QParams"):
        LK.weight_only_linear(torch.randn(2, 8), bad, qp.scale)


def test_w4a16_default_group_size_is_128():
    layer = Q.W4A16Linear.from_float(make_linear(384, 8))
    assert layer.group_size == 128 and layer.weight_scale.shape == (8, 3)


@pytest.mark.parametrize("cls", [Q.W4A16Linear, Q.W8A16Linear])
def test_group_size_must_divide_in_features(cls):
    with pytest.raises(ValueError, match=r"group_size 128 must divide in_features \(200\)"):
        cls.from_float(make_linear(200, 8), group_size=128)
    with pytest.raises(ValueError, match="group_size"):
        cls.from_float(make_linear(256, 8), group_size=0)


def test_w4a16_default_group_rejects_small_layer_clearly():
    with pytest.raises(ValueError, match="must divide in_features"):
        Q.W4A16Linear.from_float(make_linear(64, 8))


@pytest.mark.parametrize(
    "cls, rel", [(Q.W8A8Linear, 0.02), (Q.W8A16Linear, 0.01), (Q.W4A16Linear, 0.15)]
)
def test_layers_close_to_float_linear(cls, rel):
    lin = make_linear(256, 64, seed=3)
    x = torch.randn(32, 256)
    with torch.no_grad():
        ref = lin(x)
        out = cls.from_float(lin)(x)
    assert float((out - ref).norm() / ref.norm()) < rel


@pytest.mark.parametrize("cls", [Q.W8A8Linear, Q.W8A16Linear, Q.W4A16Linear])
def test_layers_half_precision_input_and_empty_batch(cls):
    layer = cls.from_float(make_linear(256, 16))
    x = torch.randn(4, 256)
    out16 = layer(x.to(torch.bfloat16))
    assert out16.dtype == torch.bfloat16 and out16.shape == (4, 16)
    torch.testing.assert_close(out16.float(), layer(x), rtol=0.05, atol=0.05)
    assert layer(torch.zeros(0, 256)).shape == (0, 16)


@pytest.mark.parametrize("cls", [Q.W8A8Linear, Q.W8A16Linear, Q.W4A16Linear])
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
    layer = Q.W8A8Linear.from_float(make_linear(256, 16))
    x = torch.randn(2, 256)
    x[1, 3] = float("inf")
    with pytest.raises(ValueError, match="infinite"):
        layer(x)


def test_constructors_validate_codes_and_scales():
    w = torch.zeros(4, 8, dtype=torch.int8)
    s = torch.ones(4)
    with pytest.raises(ValueError, match="outside the symmetric grid"):
        Q.W8A8Linear(torch.full((4, 8), -128, dtype=torch.int8), s)
    with pytest.raises(ValueError, match="positive"):
        Q.W8A8Linear(w, torch.zeros(4))
    with pytest.raises(ValueError, match="shape"):
        Q.W8A16Linear(w, torch.ones(3))
    with pytest.raises(TypeError, match="int8"):
        Q.W8A8Linear(w.float(), s)
    with pytest.raises(ValueError, match="bytes"):
        Q.W4A16Linear(torch.zeros(3, dtype=torch.uint8), torch.ones(4, 1),
                      in_features=8, out_features=4, group_size=8)


# ---------------------------------------------------------------------------- save / load


def layer_cases():
    cases = [
        ("w8a8", lambda lin: Q.W8A8Linear.from_float(lin)),
        ("w8a8-float", lambda lin: Q.W8A8Linear.from_float(lin, method="float")),
        ("w8a8-7bit", lambda lin: Q.W8A8Linear.from_float(lin, act_bits=7)),
        ("w8a16", lambda lin: Q.W8A16Linear.from_float(lin)),
        ("w8a16-g64", lambda lin: Q.W8A16Linear.from_float(lin, group_size=64)),
        ("w4a16", lambda lin: Q.W4A16Linear.from_float(lin)),
        ("w4a16-g32", lambda lin: Q.W4A16Linear.from_float(lin, group_size=32)),
    ]
    fb = pytest.mark.skipif(not qc.fbgemm_available(), reason="no fbgemm/x86 quantized engine")
    cases.append(pytest.param("fbgemm", lambda lin: Q.FbgemmDynamicLinear.from_float(lin),
                              marks=fb))
    cases.append(pytest.param(
        "fbgemm-full-range",
        lambda lin: Q.FbgemmDynamicLinear.from_float(lin, reduce_range=False), marks=fb))
    return cases


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("name, build", layer_cases())
def test_save_load_round_trip_is_bit_exact(tmp_path, name, build, bias):
    lin = make_linear(256, 24, bias=bias, seed=4)
    layer = build(lin)
    path = Q.save_quantized(layer, tmp_path / f"{name}.safetensors")
    loaded = Q.load_quantized(path)
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
        Q.save_quantized(torch.nn.Linear(2, 2), tmp_path / "x.safetensors")


def test_load_rejects_foreign_files(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(ValueError, match="not a quantcourse quantized layer"):
        Q.load_quantized(path)
    layer = Q.W8A8Linear.from_float(make_linear(256, 8))
    good = Q.save_quantized(layer, tmp_path / "good.safetensors")
    with safe_open(good, framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = dict(f.metadata())
    meta["class"] = "Nope"
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="unknown layer class"):
        Q.load_quantized(tmp_path / "bad.safetensors")
    meta["class"] = "W8A8Linear"
    meta["config"] = json.dumps({**json.loads(meta["config"]), "in_features": 255})
    save_file(tensors, str(tmp_path / "bad2.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="metadata"):
        Q.load_quantized(tmp_path / "bad2.safetensors")


# ---------------------------------------------------------------------------- registry


def test_registry_lists_every_layer_in_order():
    assert list(Q.QUANTIZED_LINEARS) == [
        "W8A8Linear", "FbgemmDynamicLinear", "W8A16Linear", "W4A16Linear"]
    for name, cls in Q.QUANTIZED_LINEARS.items():
        assert cls.__name__ == name and getattr(qc, name) is cls
        assert isinstance(cls.description, str) and cls.description
        assert "\n" not in cls.description


def test_quantized_linear_types_follow_the_device():
    cpu = qc.quantized_linear_types()
    assert cpu == qc.quantized_linear_types("cpu")
    assert ("FbgemmDynamicLinear" in cpu) == qc.fbgemm_available()
    assert list(qc.quantized_linear_types("cuda")) == ["W8A8Linear", "W8A16Linear", "W4A16Linear"]
    lin = make_linear(256, 16)
    x = torch.randn(3, 256)
    for name, cls in cpu.items():
        layer = cls.from_float(lin)     # sensible defaults: W4A16 in groups of 128
        assert type(layer) is cls and layer(x).shape == (3, 16), name
    assert cpu["W4A16Linear"].from_float(lin).group_size == 128


def test_layer_grids_are_class_attributes():
    assert (Q.W8A8Linear.qmin, Q.W8A8Linear.qmax) == (-127, 127)
    assert (Q.W8A16Linear.qmin, Q.W8A16Linear.qmax) == (-127, 127)
    assert (Q.W4A16Linear.qmin, Q.W4A16Linear.qmax) == (-7, 7)
    layer = Q.W4A16Linear.from_float(make_linear(256, 8))
    qp = layer.weight_qparams()
    assert (qp.qmin, qp.qmax, qp.group_size, qp.axis) == (-7, 7, 128, None)


def test_saved_config_is_json(tmp_path):
    layer = Q.W8A16Linear.from_float(make_linear(256, 8), group_size=64)
    path = Q.save_quantized(layer, tmp_path / "w.safetensors")
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
    assert json.loads(meta["config"]) == {"in_features": 256, "out_features": 8,
                                          "group_size": 64, "method": "auto"}


# ---------------------------------------------------------------------------- weight-only paths


def test_weight_only_path_names_what_runs():
    from quantcourse import _int8_engines as E
    lin = make_linear(256, 16)
    want = "fbgemm" if E.fp16_available() else "dequantize"
    for cls in (Q.W8A16Linear, Q.W4A16Linear):
        assert cls.from_float(lin).path == want
        assert cls.from_float(lin, method="dequantize").path == "dequantize"
        assert f"path='{want}'" in repr(cls.from_float(lin))
        with pytest.raises(ValueError, match="method"):
            cls.from_float(lin, method="int4pack")


@pytest.mark.skipif(not __import__("quantcourse._int8_engines", fromlist=["x"]).fp16_available(),
                    reason="this PyTorch build has no fbgemm fp16-weight GEMM")
@given(out_f=st.integers(1, 40), groups=st.integers(1, 4), rows=st.integers(0, 9),
       seed=st.integers(0, 2**16), bits=st.sampled_from([4, 8]))
def test_fp16_pack_holds_codes_exactly(out_f, groups, rows, seed, bits):
    from quantcourse import _int8_engines as E
    gen = torch.Generator().manual_seed(seed)
    hi = 2 ** (bits - 1) - 1
    k = 32 * groups
    codes = torch.randint(-hi, hi + 1, (out_f, k), generator=gen, dtype=torch.int8)
    codes[0, :2] = torch.tensor([-hi, hi], dtype=torch.int8)       # the grid's ends
    # one-hot inputs read single codes back: every code survives the fp16 pack exactly
    eye = torch.eye(k)
    assert torch.equal(E.matmul_fp16(eye, E.prepack_fp16(codes)), codes.float().T)
    # and a random input gives the float64 product to float32 rounding
    x = torch.randn(rows, k, generator=gen)
    got = E.matmul_fp16(x, E.prepack_fp16(codes)).double()
    ref = x.double() @ codes.double().T
    assert got.shape == (rows, out_f)
    if rows:
        assert float((got - ref).abs().max()) <= 1e-5 * max(1.0, float(ref.abs().max()))


def test_weight_only_packs_follow_the_codes():
    lin = make_linear(256, 16, seed=4)
    x = torch.randn(3, 256)
    for cls in (Q.W8A16Linear, Q.W4A16Linear):
        layer = cls.from_float(lin)
        before = layer(x)
        other = cls.from_float(make_linear(256, 16, seed=5))
        layer.load_state_dict(other.state_dict())       # new codes: packed again
        assert torch.equal(layer(x), other(x)) and not torch.equal(layer(x), before)
        if cls is Q.W8A16Linear:
            with torch.no_grad():
                layer.weight_q.neg_()                       # in place: packed again
            ref = cls.from_float(lin, method="dequantize")
            ref.load_state_dict(layer.state_dict())
            torch.testing.assert_close(layer(x), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not __import__("quantcourse._int8_engines", fromlist=["x"]).available(),
                    reason="this PyTorch build has no fbgemm")
@given(k=st.integers(1, 300), n=st.integers(1, 24), exp=st.integers(-30, 30),
       bits=st.sampled_from([7, 8]), seed=st.integers(0, 2**16), ties=st.booleans(),
       bias=st.booleans())
def test_w8a8_one_token_path_is_bit_identical(k, n, exp, bits, seed, ties, bias):
    """Batch 1 runs a shortcut with its scale as a Python float: the same bits as the rows
    path (the token twice, first row kept) and as the plain float path."""
    torch.manual_seed(seed)
    layer = Q.W8A8Linear.from_float(torch.nn.Linear(k, n, bias=bias), act_bits=bits)
    x = torch.randn(1, k) * 10.0 ** exp
    if ties:
        x = (x * 4).round() / 4
    with torch.no_grad():
        one = layer(x)
        rows = layer(torch.cat([x, x]))[:1]
        plain = LK.w8a8_linear(x, layer.weight_q, layer.weight_scale, layer.bias,
                               act_bits=bits, method="float")
    assert torch.equal(one, rows) and torch.equal(one, plain)
