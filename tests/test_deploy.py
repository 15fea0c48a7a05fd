"""ONNX export (float32 and QDQ) of the digits CNN and its ONNX Runtime execution.

Skipped, with the reason, where the optional packages onnx / onnxruntime are missing
(`pip install quantcourse[deploy]`).
"""

from __future__ import annotations

import ast
import inspect
import sys

import numpy as np
import pytest
import torch

import quantcourse as qc
from quantcourse import deploy, onnxrt

onnx = pytest.importorskip("onnx", reason="onnx not installed (pip install quantcourse[deploy])")
pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install "
                    "quantcourse[deploy])")
from onnx import numpy_helper  # noqa: E402

LAYERS = ("conv1", "conv2", "fc1", "fc2")


@pytest.fixture(scope="module")
def data():
    return qc.digits_data()


@pytest.fixture(scope="module")
def model():
    return qc.digits_cnn()


@pytest.fixture(scope="module")
def files(tmp_path_factory, model, data):
    folder = tmp_path_factory.mktemp("onnx")
    fp32 = deploy.export_digits_onnx(model, folder / "digits_fp32.onnx")
    qdq = deploy.export_digits_onnx(model, folder / "digits_qdq.onnx", qdq=True,
                                    calibration=data.x_train)
    return {"fp32": fp32, "qdq": qdq, "folder": folder}


def _inits(path):
    proto = onnx.load(path)
    return proto, {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}


def test_both_graphs_pass_the_checker_and_are_the_only_files_written(files):
    for key in ("fp32", "qdq"):
        onnx.checker.check_model(onnx.load(files[key]), full_check=True)
    assert sorted(p.name for p in files["folder"].iterdir()) == [
        "digits_fp32.onnx", "digits_qdq.onnx"]


def test_fp32_graph_is_float_only(files):
    ops = onnxrt.onnx_op_counts(files["fp32"])
    assert ops == {"Conv": 2, "Flatten": 1, "Gemm": 2, "MaxPool": 1, "Relu": 3}


def test_qdq_graph_holds_our_scales_and_zero_points_exactly(files, model, data):
    sim = deploy.simulate_qdq(model, data.x_train)
    ops = onnxrt.onnx_op_counts(files["qdq"])
    assert ops["QuantizeLinear"] == 5 and ops["DequantizeLinear"] == 5 + 2 * len(LAYERS)
    proto, inits = _inits(files["qdq"])
    for k in LAYERS:
        wq = sim.weight_qparams[k]
        codes = inits[f"{k}.weight_quantized"]
        assert codes.dtype == np.int8
        w = getattr(model, k).weight.detach()
        np.testing.assert_array_equal(codes, qc.quantize(w, wq).numpy())
        np.testing.assert_array_equal(inits[f"{k}.weight_scale"], wq.scale.numpy())
        assert inits[f"{k}.weight_zero_point"].dtype == np.int8
        assert not inits[f"{k}.weight_zero_point"].any()
        bq = sim.bias_qparams[k]
        assert inits[f"{k}.bias_quantized"].dtype == np.int32
        np.testing.assert_array_equal(inits[f"{k}.bias_scale"], bq.scale.numpy())
        aq = sim.input_qparams[k]
        assert inits[f"{k}.input_scale"].dtype == np.float32
        assert inits[f"{k}.input_scale"].shape == ()
        assert float(inits[f"{k}.input_scale"]) == float(aq.scale)
        assert inits[f"{k}.input_zero_point"].dtype == np.uint8
        assert int(inits[f"{k}.input_zero_point"]) == int(aq.zero_point)
    # Per-channel DequantizeLinear nodes name their axis explicitly (ONNX's default is 1).
    for node in proto.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            assert [(a.name, a.i) for a in node.attribute] == [("axis", 0)]
    # ... and onnx_quant_params reads the same numbers back as QParams.
    back = onnxrt.onnx_quant_params(files["qdq"])
    assert len(back) == 3 * len(LAYERS)
    for k in LAYERS:
        assert torch.equal(back[f"{k}.weight"].scale, sim.weight_qparams[k].scale)
        assert back[f"{k}.weight"].axis == 0 and (back[f"{k}.weight"].qmin,
                                                  back[f"{k}.weight"].qmax) == (-128, 127)
        assert torch.equal(back[f"{k}.input"].scale, sim.input_qparams[k].scale)
        assert torch.equal(back[f"{k}.input"].zero_point, sim.input_qparams[k].zero_point)


def test_bias_codes_are_on_the_accumulator_grid(files, model, data):
    sim = deploy.simulate_qdq(model, data.x_train)
    _, inits = _inits(files["qdq"])
    for k in LAYERS:
        want = sim.input_qparams[k].scale * sim.weight_qparams[k].scale
        assert torch.equal(torch.tensor(inits[f"{k}.bias_scale"]), want)
        b = getattr(model, k).bias.detach()
        deq = torch.tensor(inits[f"{k}.bias_quantized"]).float() * want
        assert float((deq - b).abs().max()) <= float(want.max()) / 2 + 1e-9


def test_ort_fp32_equals_torch(files, model, data):
    session = onnxrt.onnx_session(files["fp32"])
    logits = onnxrt.onnx_predict(session, data.x_test)
    with torch.no_grad():
        ref = model(data.x_test)
    assert torch.equal(logits.argmax(1), ref.argmax(1))
    assert float((logits - ref).abs().max()) < 1e-4
    acc = onnxrt.onnx_accuracy(session, data.x_test, data.y_test)
    assert acc == pytest.approx(qc.evaluate_digits(model), abs=1e-12)


def test_ort_qdq_matches_the_fake_quant_simulation(files, model, data, tmp_path):
    # ONNX Runtime picks its int8 kernels from the CPU flags (no switch emulates another CPU).
    # With VNNI they sum u8*s8 products exactly; without it (AVX2-only) pairs of products
    # saturate in int16 and the 8-bit model differs from the simulation (measured on an AMD
    # EPYC: 0.9889 against 0.9944). The session option x64_quant_precision makes ONNX Runtime
    # convert the int8 weights to uint8 and run its U8U8 kernels, which cannot saturate: the
    # deployed model then equals the simulation whichever case this machine is.
    vnni = qc.u8s8_has_vnni("onnxruntime")
    print(f"this machine: {'VNNI (exact u8s8 sums)' if vnni else 'no VNNI (int16 pair sums)'}")
    sim = deploy.simulate_qdq(model, data.x_train)
    optimized = tmp_path / "optimized.onnx"
    session = onnxrt.onnx_session(files["qdq"], optimized_model_path=optimized,
                                  x64_quant_precision=True)
    logits = onnxrt.onnx_predict(session, data.x_test)
    with torch.no_grad():
        ref = sim(data.x_test)
    agree = float((logits.argmax(1) == ref.argmax(1)).double().mean())
    assert agree >= 0.99, agree
    acc_ort = onnxrt.onnx_accuracy(session, data.x_test, data.y_test)
    acc_sim = qc.evaluate_digits(sim)
    assert abs(acc_ort - acc_sim) <= 0.005, (acc_ort, acc_sim)
    assert acc_ort >= qc.evaluate_digits(model) - 0.02
    # ONNX Runtime ran the QDQ groups as integer kernels, not float ops between Q/DQ pairs,
    # and with the option no int8 weight is left for a u8s8 kernel: all became uint8.
    ops = onnxrt.onnx_op_counts(optimized)
    assert ops.get("QLinearConv", 0) == 2 and "Conv" not in ops, ops
    kinds = {t.data_type for t in onnx.load(optimized).graph.initializer}
    assert onnx.TensorProto.INT8 not in kinds and onnx.TensorProto.UINT8 in kinds, kinds
    # Without the option, the default kernels follow the model that applies here.
    default = onnxrt.onnx_predict(onnxrt.onnx_session(files["qdq"]), data.x_test)
    predicted = deploy.simulate_qdq(model, data.x_train, u8s8_saturation=not vnni)
    with torch.no_grad():
        pred = predicted(data.x_test)
    assert float((default.argmax(1) == pred.argmax(1)).double().mean()) >= 0.99
    if vnni:
        torch.testing.assert_close(default, logits, rtol=0, atol=1e-5)


def test_saturation_model_predicts_the_avx2_accuracy_drop(model, data):
    # 8-bit weights: the int16 pair model loses images (0.9889 on the AMD machine, measured
    # with ONNX Runtime); 7-bit weights (255 * 63 * 2 = 32130 <= 32767) cannot saturate.
    sim8 = deploy.simulate_qdq(model, data.x_train)
    sat8 = deploy.simulate_qdq(model, data.x_train, u8s8_saturation=True)
    assert qc.evaluate_digits(sat8) < qc.evaluate_digits(sim8)
    sim7 = deploy.simulate_qdq(model, data.x_train, bits=7)
    sat7 = deploy.simulate_qdq(model, data.x_train, bits=7, u8s8_saturation=True)
    with torch.no_grad():
        a, b = sim7(data.x_test), sat7(data.x_test)
    assert torch.equal(a.argmax(1), b.argmax(1))
    assert float((a - b).abs().max()) < 0.05
    assert int(sat7.fc1_weight_q.abs().max()) <= 63
    with pytest.raises(ValueError, match="uint8"):
        deploy.simulate_qdq(model, data.x_train, activations="int8", u8s8_saturation=True)


@pytest.mark.parametrize("bits, activations", [(4, "uint8"), (8, "int8")])
def test_other_schemes_match_their_simulation(model, data, tmp_path, bits, activations):
    path = deploy.export_digits_onnx(model, tmp_path / "m.onnx", qdq=True,
                                     calibration=[data.x_train[:700], data.x_train[700:]],
                                     bits=bits, activations=activations)
    sim = deploy.simulate_qdq(model, data.x_train, bits=bits, activations=activations)
    _, inits = _inits(path)
    codes = inits["fc1.weight_quantized"]
    qmax = 2 ** (bits - 1) - 1
    assert codes.dtype == np.int8 and codes.min() >= -qmax and codes.max() <= qmax
    zp_dtype = np.uint8 if activations == "uint8" else np.int8
    assert inits["conv2.input_zero_point"].dtype == zp_dtype
    session = onnxrt.onnx_session(path, threads=1)
    logits = onnxrt.onnx_predict(session, data.x_test)
    with torch.no_grad():
        ref = sim(data.x_test)
    assert float((logits.argmax(1) == ref.argmax(1)).double().mean()) >= 0.99
    acc_ort = onnxrt.onnx_accuracy(session, data.x_test, data.y_test)
    assert abs(acc_ort - qc.evaluate_digits(sim)) <= 0.005


def test_simulation_uses_fake_quantize_on_the_weights(model, data):
    sim = deploy.simulate_qdq(model, data.x_train[:100])
    for k in LAYERS:
        w = getattr(model, k).weight.detach()
        assert torch.equal(getattr(sim, f"{k}_weight"),
                           qc.fake_quantize(w, qc.symmetric_qparams(w, 8, axis=0)))
    # A list of batches calibrates like the same images in one tensor (min-max; the last
    # float bit may differ, as other batch sizes sum in another order).
    sim2 = deploy.simulate_qdq(model, list(data.x_train[:100].split(30)))
    for k in LAYERS:
        assert torch.allclose(sim.input_qparams[k].scale, sim2.input_qparams[k].scale,
                              rtol=1e-5, atol=0)


def test_empty_batch_gives_empty_logits(files):
    session = onnxrt.onnx_session(files["fp32"])
    assert tuple(onnxrt.onnx_predict(session, torch.zeros(0, 1, 8, 8)).shape) == (0, 10)


def test_bad_inputs(files, model, data, tmp_path):
    x = data.x_train[:20]
    with pytest.raises(TypeError, match="digits CNN"):
        deploy.export_digits_onnx(torch.nn.Linear(2, 2), tmp_path / "a.onnx")
    with pytest.raises(ValueError, match="needs calibration"):
        deploy.export_digits_onnx(model, tmp_path / "a.onnx", qdq=True)
    with pytest.raises(ValueError, match="only used with qdq=True"):
        deploy.export_digits_onnx(model, tmp_path / "a.onnx", calibration=x)
    with pytest.raises(ValueError, match="bits"):
        deploy.export_digits_onnx(model, tmp_path / "a.onnx", qdq=True, calibration=x, bits=9)
    with pytest.raises(ValueError, match="activations"):
        deploy.export_digits_onnx(model, tmp_path / "a.onnx", qdq=True, calibration=x,
                                  activations="fp8")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        deploy.export_digits_onnx(model, tmp_path / "missing" / "a.onnx")
    with pytest.raises(ValueError, match="is a folder"):
        deploy.export_digits_onnx(model, tmp_path)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="1 NaN"):
        deploy.export_digits_onnx(model, tmp_path / "a.onnx", qdq=True, calibration=bad)
    with pytest.raises(ValueError, match=r"\(N, 1, 8, 8\)"):
        deploy.simulate_qdq(model, torch.rand(5, 64))
    with pytest.raises(TypeError, match="floating-point"):
        deploy.simulate_qdq(model, (x * 16).to(torch.int64))
    with pytest.raises(ValueError, match="no images"):
        deploy.simulate_qdq(model, torch.zeros(0, 1, 8, 8))
    with pytest.raises(TypeError, match="calibration"):
        deploy.simulate_qdq(model, 3.0)
    assert not list(tmp_path.iterdir()), "a failed export wrote a file"
    with pytest.raises(FileNotFoundError, match="no ONNX file"):
        onnxrt.onnx_session(tmp_path / "nothing.onnx")
    with pytest.raises(ValueError, match="threads"):
        onnxrt.onnx_session(files["fp32"], threads=0)
    with pytest.raises(TypeError, match="spinning"):
        onnxrt.onnx_session(files["fp32"], spinning="no")
    with pytest.raises(FileNotFoundError, match="optimized_model_path"):
        onnxrt.onnx_session(files["fp32"], optimized_model_path=tmp_path / "no" / "o.onnx")
    session = onnxrt.onnx_session(files["fp32"])
    with pytest.raises(TypeError, match="InferenceSession"):
        onnxrt.onnx_predict(model, x)
    with pytest.raises(ValueError, match="dimensions"):
        onnxrt.onnx_predict(session, torch.rand(3, 64))
    with pytest.raises(ValueError, match="NaN or infinite"):
        onnxrt.onnx_predict(session, bad)
    with pytest.raises(ValueError, match="one label per image"):
        onnxrt.onnx_accuracy(session, x, data.y_train[:5])
    with pytest.raises(TypeError, match="integer tensor"):
        onnxrt.onnx_accuracy(session, x, data.y_train[:20].float())
    with pytest.raises(ValueError, match="undefined"):
        onnxrt.onnx_accuracy(session, x[:0], data.y_train[:0])
    with pytest.raises(FileNotFoundError):
        onnxrt.onnx_op_counts(tmp_path / "nothing.onnx")


def test_missing_packages_raise_a_clear_import_error(monkeypatch, model, tmp_path):
    # A None entry in sys.modules makes `import onnx` raise ImportError, as if not installed.
    monkeypatch.setitem(sys.modules, "onnx", None)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"pip install quantcourse\[deploy\]"):
        deploy.export_digits_onnx(model, tmp_path / "a.onnx")
    with pytest.raises(ImportError, match="pip install onnx onnxruntime"):
        onnxrt._require_ort()
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("module", [deploy, onnxrt])
def test_module_imports_onnx_lazily(module):
    tree = ast.parse(inspect.getsource(module))
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in top if isinstance(n, ast.ImportFrom) and n.module}
    assert not {m.split(".")[0] for m in names} & {"onnx", "onnxruntime"}


def test_plan_is_a_frozen_record_of_each_layers_qparams(model, data):
    import dataclasses

    was_training = model.training
    plan = deploy._plan(model, list(data.x_train[:200].split(64)), 8, "uint8")
    assert model.training == was_training
    assert not any(m._forward_pre_hooks for m in model.modules())  # calibration hooks removed
    assert tuple(plan.weights) == tuple(plan.biases) == tuple(plan.inputs) == LAYERS
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.inputs = {}
    # inputs: min-max over every calibration batch of each layer's input, by hand
    seen = {k: [] for k in LAYERS}
    hooks = [getattr(model, k).register_forward_pre_hook(
        lambda _m, args, k=k: seen[k].append(args[0].detach())) for k in LAYERS]
    try:
        with torch.no_grad():
            model(data.x_train[:200])
    finally:
        for h in hooks:
            h.remove()
    for k in LAYERS:
        x = torch.cat([t.flatten() for t in seen[k]])
        lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
        assert float(plan.inputs[k].scale) == pytest.approx((hi - lo) / 255, rel=1e-6)
        w = getattr(model, k).weight.detach()
        torch.testing.assert_close(plan.weights[k].scale,
                                   w.reshape(len(w), -1).abs().amax(dim=1) / 127)
        torch.testing.assert_close(plan.biases[k].scale,
                                   plan.inputs[k].scale * plan.weights[k].scale)


def test_onnx_quantize_linear_checker_reference_is_what_onnxruntime_computes():
    """The exercise of notebook 15 holds learners to ONNX's QuantizeLinear (x / s, half to even,
    saturate): its reference must equal ONNX Runtime's own node on every case it uses."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from quantcourse.checks.nb15_energy_and_deployment import (
        _qlinear_cases,
        onnx_quantize_linear_reference,
    )

    for _label, x, s, z, axis in _qlinear_cases():
        axis = 1 if axis is None else axis
        ztype = TensorProto.UINT8 if z.dtype == torch.uint8 else TensorProto.INT8
        node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], axis=axis)
        graph = helper.make_graph(
            [node], "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
            [helper.make_tensor_value_info("y", ztype, list(x.shape))],
            [helper.make_tensor("s", TensorProto.FLOAT, list(s.shape), s.reshape(-1).tolist()),
             helper.make_tensor("z", ztype, list(z.shape), z.reshape(-1).tolist())])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        sess = ort.InferenceSession(model.SerializeToString(),
                                    providers=["CPUExecutionProvider"])
        got = torch.from_numpy(sess.run(None, {"x": x.numpy()})[0].astype(np.int64))
        assert torch.equal(got, onnx_quantize_linear_reference(x, s, z, axis)), _label
