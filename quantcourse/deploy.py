"""ONNX export of the digits CNN (float32 and QDQ) and ONNX Runtime execution.

Introduced in ``15_energy_and_deployment.ipynb``.

A quantized model leaves the course's simulation and reaches a real integer engine through a
file format. The common one is ONNX in **QDQ** form: the float graph with a
``QuantizeLinear`` -> ``DequantizeLinear`` pair on every tensor that should be integer. The
pairs are the contract: they say which tensors are int8, with which scale and zero point, and
a hardware toolchain (ONNX Runtime's CPU kernels, TensorRT, NPU compilers) fuses each
``DQ -> Conv -> Q`` group into one integer kernel (``QLinearConv``, ``QGemm``...).

* ``export_digits_onnx(model, path, qdq=False)`` writes the digits CNN as a float32 graph
  (``Conv``, ``Relu``, ``MaxPool``, ``Flatten``, ``Gemm``), built node by node with
  ``onnx.helper`` from the model's weights: offline, no tracing, no ``torch.onnx``.
* ``export_digits_onnx(model, path, qdq=True, calibration=x)`` writes the QDQ graph:

  - weights: int8 codes, symmetric, one scale per output channel (``axis=0``), zero point 0,
    narrow range ``[-(2^(b-1)-1), 2^(b-1)-1]`` (``bits`` 2 to 8, stored in int8), exactly
    ``symmetric_qparams(w, bits, axis=0)`` and ``quantize``;
  - biases: int32 codes with scale ``s_input * s_weight[c]`` and zero point 0, the layout the
    integer kernels add straight into their int32 accumulators;
  - activations (the input of every convolution and linear layer): one scale per tensor from a
    calibration pass of ``MinMaxObserver`` over ``calibration``; ``activations="uint8"``
    (asymmetric ``[0, 255]``, ONNX Runtime's preferred CPU format) or ``"int8"`` (symmetric,
    zero point 0, ``[-127, 127]``: the rule TensorRT imposes on activations).

  Our ``QParams`` map onto the ONNX operators one to one: ``y_scale`` is the float32 scale,
  ``y_zero_point`` the zero point in the storage type (uint8 / int8 / int32), ``axis`` the
  channel axis of a per-channel scale.
* ``simulate_qdq(model, calibration)`` is the same scheme as a torch fake-quant model (the
  same ``QParams``, ``fake_quantize`` at the same places), the twin the ONNX Runtime results
  are compared with.
* ``onnx_session(path)``, ``onnx_predict(session, x)``, ``onnx_accuracy(session, x, y)``:
  run a file with ONNX Runtime's ``CPUExecutionProvider`` (default graph optimisations,
  which is where the QDQ fusion happens).
* Hardware that changes the answer: ONNX Runtime picks its integer kernels from the CPU
  flags. Without VNNI its u8*s8 kernels saturate pairs of products in int16 (see
  ``quantcourse.hardware``), so the 8-bit QDQ model can then disagree with the simulation.
  Two remedies make the deployed model equal the simulation on every CPU:
  ``onnx_session(path, x64_quant_precision=True)`` (ONNX Runtime's documented session option:
  U8U8 kernels where U8S8 would saturate), or 7-bit weights (``bits=7``: ``255 * 63 * 2 <
  32767``, so no pair can saturate, by construction).
* ``onnx_op_counts(path)`` (operators in a graph) and ``onnx_quant_params(path)`` (every
  scale and zero point of a QDQ graph read back as ``QParams``).

Rounding: ONNX's ``QuantizeLinear`` divides by the scale and rounds half to even; ``quantize``
multiplies by the float32 reciprocal and rounds half to even. The two can differ by one code
when ``x / s`` lands within a float32 ulp of a half, which is rare: on the digits test set the
QDQ model and ``simulate_qdq`` give the same prediction for every image.

Needs the optional packages ``onnx`` and ``onnxruntime`` (``pip install quantcourse[deploy]``
or ``pip install onnx onnxruntime``); they are imported when a function needs them, so the
rest of the package works without them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import check_bits, check_choice, check_float_tensor
from .affine import QParams, fake_quantize, quantize, symmetric_qparams
from .hardware import u8s8_matmul_saturating
from .models import DigitsCNN
from .nn import calibrate, quantizable_layers
from .observers import MinMaxObserver
from .onnxrt import _require_onnx

__all__ = [
    "QDQDigitsCNN",
    "export_digits_onnx",
    "simulate_qdq",
    "ONNX_OPSET",
]

ONNX_OPSET = 17
# IR version 8 (ONNX 1.10, 2021) keeps the files readable by older ONNX Runtime and TensorRT.
_IR_VERSION = 8
_LAYERS = ("conv1", "conv2", "fc1", "fc2")  # the layers the exported graph encodes, in order
_ACTIVATIONS = ("uint8", "int8")
_CALIBRATION_BATCH = 256
_INT32 = (-(2**31), 2**31 - 1)


# ---------------------------------------------------------------- validation


def _check_digits_model(model: object, fn: str) -> DigitsCNN:
    """The graph builder encodes DigitsCNN's layers; refuse anything it would misrepresent."""
    if not isinstance(model, DigitsCNN):
        raise TypeError(
            f"{fn}: expected the digits CNN (qc.digits_cnn(), a DigitsCNN), got "
            f"{type(model).__name__}"
        )
    for name in ("conv1", "conv2"):
        conv = getattr(model, name)
        if not (isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3)
                and conv.padding == (1, 1) and conv.stride == (1, 1)
                and conv.dilation == (1, 1) and conv.groups == 1 and conv.bias is not None
                and conv.padding_mode == "zeros"):
            raise ValueError(f"{fn}: model.{name} is not the 3x3, padding-1 convolution with a "
                             "bias that the exported graph encodes")
    pool = model.pool
    if not (isinstance(pool, nn.MaxPool2d) and pool.kernel_size in (2, (2, 2))
            and pool.stride in (2, (2, 2)) and pool.padding in (0, (0, 0))
            and pool.dilation in (1, (1, 1)) and not pool.ceil_mode):
        raise ValueError(f"{fn}: model.pool is not the 2x2, stride-2 max pool the graph encodes")
    for name in ("fc1", "fc2"):
        if not isinstance(getattr(model, name), nn.Linear) or getattr(model, name).bias is None:
            raise ValueError(f"{fn}: model.{name} must be an nn.Linear with a bias")
    for name, p in model.named_parameters():
        if not p.is_floating_point():
            raise TypeError(f"{fn}: parameter {name} is {p.dtype}, expected floating point")
        if not bool(torch.isfinite(p.detach()).all()):
            raise ValueError(f"{fn}: parameter {name} holds NaN or infinite values")
    return model


def _check_images(x: object, fn: str, what: str = "x") -> torch.Tensor:
    check_float_tensor(x, f"{fn}: {what}")
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, 8, 8):
        raise ValueError(f"{fn}: {what} must hold digits images shaped (N, 1, 8, 8), got "
                         f"{tuple(x.shape)}")
    n_bad = int((~torch.isfinite(x)).sum())
    if n_bad:
        raise ValueError(f"{fn}: {what} holds {n_bad} NaN or infinite value(s)")
    return x


def _calibration_batches(calibration: object, fn: str) -> list[torch.Tensor]:
    if calibration is None:
        raise ValueError(f"{fn}: a QDQ model needs calibration images to choose activation "
                         "ranges, e.g. calibration=qc.digits_data().x_train")
    if isinstance(calibration, torch.Tensor):
        batches = [calibration]
    elif isinstance(calibration, Iterable) and not isinstance(calibration, (str, bytes)):
        batches = list(calibration)
    else:
        raise TypeError(f"{fn}: calibration must be a tensor of images or a list of image "
                        f"batches, got {type(calibration).__name__}")
    out = []
    for i, b in enumerate(batches):
        _check_images(b, fn, "calibration" if len(batches) == 1 else f"calibration batch {i}")
        out.extend(b.detach().cpu().float().split(_CALIBRATION_BATCH))
    if not out or sum(len(b) for b in out) == 0:
        raise ValueError(f"{fn}: calibration holds no images")
    return out


# ---------------------------------------------------------------- the quantization plan


def _activation_observer(activations: str) -> MinMaxObserver:
    if activations == "uint8":
        return MinMaxObserver(8, symmetric=False)
    return MinMaxObserver(8, symmetric=True)


@dataclass(frozen=True)
class _QuantPlan:
    """The ``QParams`` of every convolution and linear layer, by layer name: its weight
    (per output channel), its bias (int32 on the accumulator's grid) and its input."""

    weights: dict[str, QParams]
    biases: dict[str, QParams]
    inputs: dict[str, QParams]


def _plan(model: DigitsCNN, batches: list[torch.Tensor], bits: int,
          activations: str) -> _QuantPlan:
    """Weight, bias and input ``QParams`` of every layer (one calibration pass, no grad)."""
    layers = quantizable_layers(model)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        observed = calibrate(model, lambda: _activation_observer(activations), batches,
                             run=lambda b: model(b.to(device)))
    finally:
        model.train(was_training)
    inputs = {k: qp.to("cpu") for k, qp in observed.items()}
    weights, biases = {}, {}
    for k, mod in layers.items():
        w = mod.weight.detach().cpu().float()
        weights[k] = symmetric_qparams(w, bits, axis=0)
        # The integer kernels add the bias into their int32 accumulator, whose unit is
        # s_input * s_weight[c]; ONNX stores it as int32 codes on that grid.
        scale = (inputs[k].scale * weights[k].scale).float()
        biases[k] = QParams(scale, torch.zeros(scale.shape, dtype=torch.int32),
                            *_INT32, axis=0)
    return _QuantPlan(weights, biases, inputs)


class QDQDigitsCNN(nn.Module):
    """The digits CNN with the QDQ graph's quantization simulated in float (fake quantize).

    Weights and biases are stored fake-quantized; every convolution and linear input is
    fake-quantized with its calibrated ``QParams``, at the same places as the exported QDQ
    graph. ``weight_qparams``, ``bias_qparams`` and ``input_qparams`` map each layer name
    (``conv1``, ``conv2``, ``fc1``, ``fc2``) to its ``QParams``.
    """

    def __init__(self, model: DigitsCNN, weight_qparams: dict, bias_qparams: dict,
                 input_qparams: dict, *, bits: int, activations: str,
                 u8s8_saturation: bool = False) -> None:
        super().__init__()
        self.u8s8_saturation = u8s8_saturation
        self.weight_qparams = dict(weight_qparams)
        self.bias_qparams = dict(bias_qparams)
        self.input_qparams = dict(input_qparams)
        self.bits = bits
        self.activations = activations
        for k in _LAYERS:
            mod = getattr(model, k)
            w = mod.weight.detach().cpu().float()
            b = mod.bias.detach().cpu().float()
            self.register_buffer(f"{k}_weight", fake_quantize(w, self.weight_qparams[k]))
            self.register_buffer(f"{k}_bias", fake_quantize(b, self.bias_qparams[k]))
            self.register_buffer(f"{k}_weight_q", quantize(w, self.weight_qparams[k]))

    def _act(self, x: torch.Tensor, k: str) -> torch.Tensor:
        return fake_quantize(x, self.input_qparams[k])

    def _saturating(self, x: torch.Tensor, k: str) -> torch.Tensor:
        """Layer ``k`` on uint8 input codes as AVX2's u8*s8 kernels compute it.

        The reduction axis is ordered as ONNX Runtime's x86 kernels pack it: a linear layer's
        inputs in order, a convolution's as (kernel row, kernel column, input channel) with the
        channels innermost, padded with the zero point's code; adjacent elements form pairs.
        """
        qp = self.input_qparams[k]
        codes = quantize(x, qp)
        w_q = getattr(self, f"{k}_weight_q")
        z = int(qp.zero_point)
        if w_q.ndim == 4:
            n, c, h, wd = codes.shape
            padded = F.pad(codes.float(), (1, 1, 1, 1), value=float(z))
            cols = F.unfold(padded, 3)                                  # (N, C*9, H*W)
            cols = cols.reshape(n, c, 9, h * wd).permute(0, 3, 2, 1).reshape(n * h * wd, 9 * c)
            w2 = w_q.permute(0, 2, 3, 1).reshape(w_q.shape[0], 9 * c)
        else:
            cols, w2 = codes.float(), w_q
        acc = u8s8_matmul_saturating(cols.to(torch.uint8), w2.t().contiguous())
        acc = acc.long() - z * w2.long().sum(dim=1)[None, :]
        out = acc.float() * (qp.scale * self.weight_qparams[k].scale)[None, :]
        out = out + getattr(self, f"{k}_bias")[None, :]
        if w_q.ndim == 4:
            out = out.reshape(n, h, wd, -1).permute(0, 3, 1, 2)
        return out

    def _layer(self, x: torch.Tensor, k: str) -> torch.Tensor:
        if self.u8s8_saturation:
            return self._saturating(x, k)
        w, b = getattr(self, f"{k}_weight"), getattr(self, f"{k}_bias")
        return F.conv2d(x, w, b, padding=1) if w.ndim == 4 else F.linear(x, w, b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, 10)`` for images ``(N, 1, 8, 8)`` (CPU)."""
        x = self._act(x.float(), "conv1")
        x = F.relu(self._layer(x, "conv1"))
        x = self._act(x, "conv2")
        x = F.relu(self._layer(x, "conv2"))
        # Max pooling and flattening neither create nor reorder values, so fc1's input grid
        # (observed after them) is also the grid of conv2's output; the graph quantizes there
        # too, which lets ONNX Runtime emit conv2 as an integer kernel with an integer output.
        x = self._act(x, "fc1")
        x = F.max_pool2d(x, 2).flatten(1)
        x = self._act(x, "fc1")
        x = F.relu(self._layer(x, "fc1"))
        x = self._act(x, "fc2")
        return self._layer(x, "fc2")

    def extra_repr(self) -> str:
        return (f"bits={self.bits}, activations={self.activations!r}, "
                f"u8s8_saturation={self.u8s8_saturation}")


def simulate_qdq(model: DigitsCNN, calibration, *, bits: int = 8,
                 activations: str = "uint8", u8s8_saturation: bool = False) -> QDQDigitsCNN:
    """The torch fake-quant twin of ``export_digits_onnx(..., qdq=True)`` (same ``QParams``).

    ``calibration``: images ``(N, 1, 8, 8)`` (or a list of such batches) run through
    ``model`` once to observe every convolution and linear input with ``MinMaxObserver``.
    ``u8s8_saturation=True`` (uint8 activations only) computes every convolution and linear
    layer on the integer codes with ``u8s8_matmul_saturating``: the prediction for ONNX
    Runtime's default kernels on an x86 CPU without VNNI. The default (exact sums) is what
    they compute with VNNI, or anywhere with ``onnx_session(..., x64_quant_precision=True)``.
    """
    fn = "simulate_qdq"
    _check_digits_model(model, fn)
    check_bits(bits, 2, 8, fn)
    check_choice(activations, "activations", _ACTIVATIONS, fn)
    if not isinstance(u8s8_saturation, bool):
        raise TypeError(f"{fn}: u8s8_saturation must be True or False, got {u8s8_saturation!r}")
    if u8s8_saturation and activations != "uint8":
        raise ValueError(f"{fn}: u8s8_saturation models uint8 activations times int8 weights; "
                         f"activations={activations!r} does not use that kernel")
    batches = _calibration_batches(calibration, fn)
    plan = _plan(model, batches, bits, activations)
    return QDQDigitsCNN(model, plan.weights, plan.biases, plan.inputs, bits=bits,
                        activations=activations, u8s8_saturation=u8s8_saturation).eval()


# ---------------------------------------------------------------- the ONNX graphs


def _np(t: torch.Tensor):
    return t.detach().cpu().contiguous().numpy()


class _GraphBuilder:
    def __init__(self, helper, numpy_helper) -> None:
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list = []
        self.inits: list = []
        self._names: set[str] = set()

    def init(self, name: str, array) -> str:
        if name not in self._names:
            self._names.add(name)
            self.inits.append(self.numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(self.helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def qparams(self, key: str, qp: QParams, dtype) -> tuple[str, str]:
        """Scale (float32) and zero point (storage dtype) initializers of one ``QParams``."""
        import numpy as np

        scale = self.init(f"{key}_scale", _np(qp.scale).astype(np.float32))
        zp = self.init(f"{key}_zero_point", _np(qp.zero_point).astype(dtype))
        return scale, zp

    def qdq(self, x: str, key: str, qp: QParams, dtype, tag: str) -> str:
        scale, zp = self.qparams(key, qp, dtype)
        q = self.node("QuantizeLinear", [x, scale, zp], f"{tag}_quantized")
        return self.node("DequantizeLinear", [q, scale, zp], f"{tag}_dequantized")

    def constant_dq(self, key: str, codes, qp: QParams, dtype) -> str:
        name = self.init(f"{key}_quantized", codes)
        scale, zp = self.qparams(key, qp, dtype)
        return self.node("DequantizeLinear", [name, scale, zp], f"{key}_dequantized", axis=0)


def _build_graph(model: DigitsCNN, plan: _QuantPlan | None, activations: str):
    import numpy as np

    onnx, helper, numpy_helper = _require_onnx()
    g = _GraphBuilder(helper, numpy_helper)
    act_dtype = np.uint8 if activations == "uint8" else np.int8

    def params(k: str) -> tuple[str, str]:
        mod = getattr(model, k)
        w = mod.weight.detach().cpu().float()
        b = mod.bias.detach().cpu().float()
        if plan is None:
            return g.init(f"{k}.weight", _np(w)), g.init(f"{k}.bias", _np(b))
        w_codes = _np(quantize(w, plan.weights[k]))  # int8 for bits <= 8
        b_codes = _np(quantize(b, plan.biases[k])).astype(np.int32)
        return (g.constant_dq(f"{k}.weight", w_codes, plan.weights[k], np.int8),
                g.constant_dq(f"{k}.bias", b_codes, plan.biases[k], np.int32))

    def act(x: str, k: str, tag: str) -> str:
        if plan is None:
            return x
        return g.qdq(x, f"{k}.input", plan.inputs[k], act_dtype, tag)

    conv = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [1, 1]}
    x = act("input", "conv1", "conv1.input")
    x = g.node("Conv", [x, *params("conv1")], "conv1.output", **conv)
    x = g.node("Relu", [x], "relu1.output")
    x = act(x, "conv2", "conv2.input")
    x = g.node("Conv", [x, *params("conv2")], "conv2.output", **conv)
    x = g.node("Relu", [x], "relu2.output")
    x = act(x, "fc1", "relu2.output")  # same grid as fc1's input: see QDQDigitsCNN.forward
    x = g.node("MaxPool", [x], "pool.output", kernel_shape=[2, 2], strides=[2, 2])
    x = g.node("Flatten", [x], "flatten.output", axis=1)
    x = act(x, "fc1", "fc1.input")
    x = g.node("Gemm", [x, *params("fc1")], "fc1.output", transB=1)
    x = g.node("Relu", [x], "relu3.output")
    x = act(x, "fc2", "fc2.input")
    g.node("Gemm", [x, *params("fc2")], "logits", transB=1)

    name = "digits_cnn_qdq" if plan is not None else "digits_cnn_fp32"
    graph = helper.make_graph(
        g.nodes, name,
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 10])],
        g.inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                              producer_name="quantcourse", ir_version=_IR_VERSION)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export_digits_onnx(model: DigitsCNN, path: str | os.PathLike, *, qdq: bool = False,
                       calibration=None, bits: int = 8, activations: str = "uint8") -> str:
    """Write the digits CNN to ``path`` as an ONNX graph (float32, or QDQ); returns the path.

    ``qdq=True`` needs ``calibration`` images (a tensor ``(N, 1, 8, 8)`` or a list of
    batches) and writes int8 per-channel symmetric weights (``bits`` 2 to 8), int32 biases and
    per-tensor activations (``activations="uint8"`` asymmetric or ``"int8"`` symmetric), the
    same ``QParams`` as ``simulate_qdq(model, calibration, bits=bits,
    activations=activations)``. The graph passes ``onnx.checker`` before it is written; only
    ``path`` is written (its folder must exist).
    """
    fn = "export_digits_onnx"
    _check_digits_model(model, fn)
    if not isinstance(qdq, bool):
        raise TypeError(f"{fn}: qdq must be True or False, got {qdq!r}")
    check_bits(bits, 2, 8, fn)
    check_choice(activations, "activations", _ACTIVATIONS, fn)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{fn}: path must be a str or os.PathLike, got {type(path).__name__}")
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{fn}: {target} is a folder; give a file path such as "
                         f"{target / 'digits.onnx'}")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"{fn}: the folder {target.parent} does not exist")
    if not qdq:
        if calibration is not None:
            raise ValueError(f"{fn}: calibration is only used with qdq=True")
        if bits != 8 or activations != "uint8":
            raise ValueError(f"{fn}: bits and activations only apply with qdq=True")
    onnx, _, _ = _require_onnx()
    plan = None
    if qdq:
        batches = _calibration_batches(calibration, fn)
        plan = _plan(model, batches, bits, activations)
    proto = _build_graph(model, plan, activations)
    onnx.save_model(proto, os.fspath(target))
    return os.fspath(target)
