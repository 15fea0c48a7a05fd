"""Running ONNX files with ONNX Runtime and reading QDQ graphs back: ``onnx_session``,
``onnx_predict``, ``onnx_accuracy``, ``onnx_op_counts``, ``onnx_quant_params``.

Introduced in ``15_energy_and_deployment.ipynb``, beside ``deploy``'s export. ONNX Runtime
picks its integer kernels from the CPU flags; ``onnx_session(path, x64_quant_precision=True)``
is its documented remedy for the int16 pair saturation of u8*s8 kernels without VNNI (see
``quantcourse.hardware`` and ``deploy``). Needs the optional packages ``onnx`` and
``onnxruntime`` (``pip install quantcourse[deploy]``), imported only when a function needs them.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import torch

from ._validate import check_float_tensor
from .affine import QParams

__all__ = ["onnx_session", "onnx_predict", "onnx_accuracy", "onnx_op_counts", "onnx_quant_params"]

_INT32 = (-(2**31), 2**31 - 1)
_INSTALL_HINT = (
    "the ONNX deploy path needs the optional packages onnx and onnxruntime: run "
    "`pip install quantcourse[deploy]` (or `pip install onnx onnxruntime`)"
)

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
