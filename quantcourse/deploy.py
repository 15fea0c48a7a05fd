"""ONNX export of the digits CNN (float32 and QDQ) and ONNX Runtime execution.

Introduced in ``14_int8_kernels_and_hardware.ipynb``.

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
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import check_bits, check_float_tensor
from .affine import QParams, fake_quantize, quantize, symmetric_qparams
from .hardware import u8s8_matmul_saturating
from .models import DigitsCNN
from .nn import calibrate, quantizable_layers
from .observers import MinMaxObserver

__all__ = [
    "QDQDigitsCNN",
    "export_digits_onnx",
    "simulate_qdq",
    "onnx_session",
    "onnx_predict",
    "onnx_accuracy",
    "onnx_op_counts",
    "onnx_quant_params",
    "ONNX_OPSET",
]

ONNX_OPSET = 17
# IR version 8 (ONNX 1.10, 2021) keeps the files readable by older ONNX Runtime and TensorRT.
_IR_VERSION = 8
_INSTALL_HINT = (
    "the ONNX deploy path needs the optional packages onnx and onnxruntime: run "
    "`pip install quantcourse[deploy]` (or `pip install onnx onnxruntime`)"
)
_LAYERS = ("conv1", "conv2", "fc1", "fc2")  # the layers the exported graph encodes, in order
_ACTIVATIONS = ("uint8", "int8")
_CALIBRATION_BATCH = 256
_INT32 = (-(2**31), 2**31 - 1)


def _require_onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError as err:
        raise ImportError(f"cannot import onnx: {_INSTALL_HINT}") from err
    return onnx, helper, numpy_helper


def _require_ort():
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError(f"cannot import onnxruntime: {_INSTALL_HINT}") from err
    return onnxruntime


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


def _check_choice(value: object, name: str, choices: tuple[str, ...], fn: str) -> str:
    if value not in choices:
        raise ValueError(f"{fn}: {name} must be one of {', '.join(map(repr, choices))}, "
                         f"got {value!r}")
    return value


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
    _check_choice(activations, "activations", _ACTIVATIONS, fn)
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
    _check_choice(activations, "activations", _ACTIVATIONS, fn)
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


# ---------------------------------------------------------------- ONNX Runtime


def onnx_session(path: str | os.PathLike, *, threads: int | None = None,
                 spinning: bool = False,
                 optimized_model_path: str | os.PathLike | None = None,
                 x64_quant_precision: bool = False):
    """An ``onnxruntime.InferenceSession`` on ``CPUExecutionProvider`` (default optimisations).

    ``threads`` sets ``intra_op_num_threads`` (default: ONNX Runtime's choice).
    ``spinning=False`` (the default here, not ONNX Runtime's) stops idle worker threads from
    busy-waiting: on a small machine the spinning threads of one session slow down every other
    session and PyTorch, by up to 3x in alternating timings on 2 cores.
    ``optimized_model_path`` asks ONNX Runtime to write the graph it actually runs (after
    fusing QDQ groups into integer kernels) to that file, for inspection with
    ``onnx_op_counts``. Warnings are kept off stderr (log level: errors only).
    ``x64_quant_precision=True`` sets ONNX Runtime's session option
    ``session.x64quantprecision``: on x86 CPUs without VNNI (AVX2, AVX-512 without VNNI) its
    u8*s8 kernels add product pairs into a saturating int16 (``vpmaddubsw``), so ONNX Runtime
    then converts int8 weights to uint8 and runs its slower U8U8 kernels, which widen to 16
    bits before multiplying and never saturate. With VNNI the products already go straight to
    int32 and the option changes nothing. Either way the integer kernels compute the exact
    sums the fake-quant simulation assumes.
    """
    fn = "onnx_session"
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{fn}: path must be a str or os.PathLike, got {type(path).__name__}")
    if not Path(path).is_file():
        raise FileNotFoundError(f"{fn}: no ONNX file at {path}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):
        raise ValueError(f"{fn}: threads must be a positive int or None, got {threads!r}")
    if not isinstance(spinning, bool):
        raise TypeError(f"{fn}: spinning must be True or False, got {spinning!r}")
    if not isinstance(x64_quant_precision, bool):
        raise TypeError(f"{fn}: x64_quant_precision must be True or False, got "
                        f"{x64_quant_precision!r}")
    if optimized_model_path is not None and not Path(optimized_model_path).parent.is_dir():
        raise FileNotFoundError(
            f"{fn}: the folder of optimized_model_path {optimized_model_path} does not exist")
    ort = _require_ort()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if x64_quant_precision:
        options.add_session_config_entry("session.x64quantprecision", "1")
    if optimized_model_path is not None:
        options.optimized_model_filepath = os.fspath(optimized_model_path)
    return ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])


def onnx_predict(session, x: torch.Tensor) -> torch.Tensor:
    """Run ``session`` on a float tensor; returns its first output as a float32 tensor."""
    fn = "onnx_predict"
    if not (callable(getattr(session, "run", None)) and callable(getattr(session, "get_inputs",
                                                                           None))):
        raise TypeError(f"{fn}: session must be an onnxruntime.InferenceSession (from "
                        f"onnx_session), got {type(session).__name__}")
    check_float_tensor(x, fn)
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ValueError(f"{fn}: the model takes {len(inputs)} inputs; this helper feeds one")
    rank = len(inputs[0].shape)
    if x.ndim != rank:
        raise ValueError(f"{fn}: the model's input {inputs[0].name!r} has {rank} dimensions "
                         f"{inputs[0].shape}, got a tensor shaped {tuple(x.shape)}")
    n_bad = int((~torch.isfinite(x)).sum())
    if n_bad:
        raise ValueError(f"{fn}: x holds {n_bad} NaN or infinite value(s)")
    arr = x.detach().cpu().float().contiguous().numpy()
    out = session.run(None, {inputs[0].name: arr})[0]
    return torch.from_numpy(out.copy()).float()


def onnx_accuracy(session, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of images whose argmax logit, run by ``session``, equals the label ``y``."""
    fn = "onnx_accuracy"
    if not isinstance(y, torch.Tensor) or y.is_floating_point() or y.is_complex() \
            or y.dtype == torch.bool:
        raise TypeError(f"{fn}: y must be an integer tensor of labels")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn}: x must be a torch.Tensor, got {type(x).__name__}")
    if y.ndim != 1 or x.ndim == 0 or len(y) != len(x):
        raise ValueError(f"{fn}: need one label per image: x has shape {tuple(x.shape)}, "
                         f"y {tuple(y.shape)}")
    if len(y) == 0:
        raise ValueError(f"{fn}: the accuracy of no images is undefined; pass at least one")
    logits = onnx_predict(session, x)
    if logits.ndim != 2 or len(logits) != len(y):
        raise ValueError(f"{fn}: the model returned shape {tuple(logits.shape)}, expected "
                         f"({len(y)}, classes)")
    return float((logits.argmax(dim=1) == y.cpu()).double().mean())


# ---------------------------------------------------------------- reading graphs back


def _load(path_or_model, fn: str):
    onnx, _, _ = _require_onnx()
    if isinstance(path_or_model, onnx.ModelProto):
        return path_or_model
    if not isinstance(path_or_model, (str, os.PathLike)):
        raise TypeError(f"{fn}: expected a path or an onnx.ModelProto, got "
                        f"{type(path_or_model).__name__}")
    if not Path(path_or_model).is_file():
        raise FileNotFoundError(f"{fn}: no ONNX file at {path_or_model}")
    return onnx.load(os.fspath(path_or_model))


def onnx_op_counts(path_or_model) -> dict[str, int]:
    """How many nodes of each operator type a graph holds (sorted by operator name)."""
    proto = _load(path_or_model, "onnx_op_counts")
    return dict(sorted(Counter(n.op_type for n in proto.graph.node).items()))


_STORAGE = {"int8": (-128, 127), "uint8": (0, 255), "int32": _INT32}


def onnx_quant_params(path_or_model) -> dict[str, QParams]:
    """Every scale and zero point of a QDQ graph, as ``QParams`` keyed by the scale's prefix.

    Keys look like ``"conv1.weight"``, ``"conv1.bias"``, ``"conv1.input"`` (the initializer
    names without ``_scale``). ``qmin``/``qmax`` are the storage type's full range (ONNX
    stores no narrow-range flag); ``axis`` comes from the node's ``axis`` attribute when the
    scale is a vector.
    """
    fn = "onnx_quant_params"
    _, helper, numpy_helper = _require_onnx()
    proto = _load(path_or_model, fn)
    inits = {t.name: t for t in proto.graph.initializer}
    out: dict[str, QParams] = {}
    for node in proto.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        s_name, z_name = node.input[1], node.input[2]
        if s_name not in inits or z_name not in inits:
            continue
        key = s_name[: -len("_scale")] if s_name.endswith("_scale") else s_name
        if key in out:
            continue
        scale = torch.from_numpy(numpy_helper.to_array(inits[s_name]).copy())
        zp_arr = numpy_helper.to_array(inits[z_name])
        qmin, qmax = _STORAGE.get(str(zp_arr.dtype), (int(zp_arr.min()), int(zp_arr.max()) + 1))
        axis = None
        if scale.ndim == 1:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            axis = int(attrs.get("axis", 1))
        zp = torch.from_numpy(zp_arr.astype("int64")).to(torch.int32)
        out[key] = QParams(scale.float(), zp, qmin, qmax, axis=axis)
    return out
