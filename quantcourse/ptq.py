"""Post-training quantization (PTQ): static (calibrated) and dynamic flows over ``quantcourse.nn``.

Introduced in ``10_post_training_quantization.ipynb``.

Both flows read a :class:`~quantcourse.nn.QuantConfig` (which scheme each layer's weight and
input activation gets, by layer type or name; ``None`` keeps a layer in float) and return a copy
of the model (the model itself with ``inplace=True``) in which every configured layer is wrapped
in a :class:`QuantizedLayer`: the original layer with its weight fake-quantized ahead of time,
plus the rule for its input.

* ``quantize_static(model, config, calibration_batches, ...)``: observers watch every
  configured layer's input while the float model runs the calibration batches; their ranges are
  frozen into per-tensor ``QParams`` that the wrapped layers apply to every later input.
* ``quantize_dynamic(model, config)``: no calibration; each input's grid is computed from that
  input at run time, per tensor or per token (``QuantSpec(granularity="token")``).
* ``quantized_layers(model)``: ``{name: QuantizedLayer}`` of a quantized model, to inspect.
* ``ptq_model_nbytes(model)``: bytes a deployed file would hold (packed integer weights with
  their scales, everything else as stored).
* ``serialized_nbytes(model)``: bytes of the saved ``state_dict`` (any model, PyTorch's too).
* ``torch_dynamic_int8(model)``: PyTorch's own dynamic int8 (``torch.ao.quantization
  .quantize_dynamic`` on the x86/fbgemm engine: per-tensor int8 weights, 7-bit per-tensor
  activations), guarded: where it is missing or fails, ``(None, reason)``.

Bad input (DESIGN section 6) fails before any work with the model untouched: a config naming a
layer the model lacks, a granularity a flow does not support (static activations are per tensor;
weights cannot be per token), an observer that is not one, no calibration batches, a model that
is already quantized.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from ._validate import check_bool
from .affine import QParams, fake_quantize
from .metrics import quantized_nbytes, tensor_nbytes
from .nn import observe_inputs, quantize_weight, swap_layers
from .observers import MinMaxObserver
from .qconfig import LayerConfig, QuantConfig, QuantSpec

__all__ = [
    "QuantizedLayer",
    "quantize_static",
    "quantize_dynamic",
    "quantized_layers",
    "ptq_model_nbytes",
    "serialized_nbytes",
    "torch_dynamic_int8",
]


def _describe(spec: QuantSpec | None) -> str:
    if spec is None:
        return "float"
    if spec.is_float:
        return str(spec.bits)
    kind = "sym" if spec.symmetric else "asym"
    gran = spec.granularity + (f"={spec.group_size}" if spec.group_size else "")
    return f"int{spec.bits} {kind} per {gran}"


class QuantizedLayer(nn.Module):
    """A layer after PTQ: ``layer`` (its weight already fake-quantized by ``config.weight``)
    fed an input that is fake-quantized first, by frozen ``input_qparams`` (static), or by
    ``config.activation`` computed from each input (dynamic), or not at all (weight-only).

    ``weight_qparams`` holds the weight's grid (None for float formats or float weights);
    ``mode`` is ``"static"``, ``"dynamic"`` or ``"weight-only"``.
    """

    def __init__(self, layer: nn.Module, config: LayerConfig,
                 input_qparams: QParams | None = None) -> None:
        super().__init__()
        if not isinstance(config, LayerConfig):
            raise TypeError(f"QuantizedLayer: config must be a LayerConfig, got "
                            f"{type(config).__name__}")
        self.layer = layer
        self.config = config
        self.input_qparams = input_qparams
        self.weight_qparams: QParams | None = None
        if config.weight is not None:
            s = config.weight
            with torch.no_grad():
                w_hat, self.weight_qparams = quantize_weight(
                    layer.weight.detach(), s.bits, granularity=s.granularity,
                    group_size=s.group_size, symmetric=s.symmetric)
                layer.weight.copy_(w_hat)
        if input_qparams is not None:
            self.mode = "static"
        elif config.activation is not None:
            self.mode = "dynamic"
        else:
            self.mode = "weight-only"

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """The input as this layer sees it after quantization."""
        if self.mode == "static":
            return fake_quantize(x, self.input_qparams)
        if self.mode == "dynamic":
            return self.config.activation.activation(x)
        return x

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.layer(self.quantize_input(x), *args, **kwargs)

    def weight_nbytes(self) -> int:
        """Bytes the deployed weight takes: packed codes plus scales (and zero points)."""
        w = self.layer.weight
        if self.weight_qparams is None:
            bits = 32 if self.config.weight is None else 16
            return w.numel() * bits // 8
        return quantized_nbytes(w.numel(), self.weight_qparams)

    def extra_repr(self) -> str:
        text = f"weight={_describe(self.config.weight)}, input="
        if self.mode == "static":
            qp = self.input_qparams
            text += (f"int{qp.bits} static scale={float(qp.scale.reshape(-1)[0]):.4g} "
                     f"zero_point={int(qp.zero_point.reshape(-1)[0])}")
        else:
            text += f"{_describe(self.config.activation)}" + \
                (" dynamic" if self.mode == "dynamic" else "")
        return text


# ---------------------------------------------------------------- checks before any work


def _plan(model: nn.Module, config: QuantConfig, inplace: bool, fn: str,
          static: bool) -> dict[str, LayerConfig]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{fn}: expected an nn.Module, got {type(model).__name__}")
    if not isinstance(config, QuantConfig):
        raise TypeError(f"{fn}: config must be a qc.QuantConfig, got {type(config).__name__}")
    check_bool(inplace, "inplace", fn)
    done = [n for n, m in model.named_modules() if isinstance(m, QuantizedLayer)]
    if done:
        raise ValueError(f"{fn}: the model is already quantized ({len(done)} QuantizedLayer "
                         f"modules, e.g. {done[0]!r}); start from the float model")
    plan = config.resolve(model)  # raises for names the model lacks
    for name, cfg in plan.items():
        w, a = cfg.weight, cfg.activation
        if w is not None and w.granularity == "token":
            raise ValueError(f"{fn}: layer {name!r}: weights are quantized per tensor, channel "
                             "or group, not per token")
        if a is None or a.is_float:
            continue
        allowed = ("tensor",) if static else ("tensor", "token")
        if a.granularity not in allowed:
            raise ValueError(
                f"{fn}: layer {name!r}: activation granularity {a.granularity!r} is not "
                f"supported here; use {' or '.join(map(repr, allowed))}"
                + (" (a calibrated range is one per tensor; per-token ranges need "
                   "quantize_dynamic)" if static else ""))
    return plan


def _default_observer(spec: QuantSpec):
    return MinMaxObserver(spec.bits, symmetric=spec.symmetric)


# ---------------------------------------------------------------- the two flows


def quantize_static(
    model: nn.Module,
    config: QuantConfig,
    calibration_batches: Iterable,
    *,
    make_observer: Callable[[QuantSpec], object] = _default_observer,
    run: Callable[[object], object] | None = None,
    progress: bool = False,
    inplace: bool = False,
) -> nn.Module:
    """Static PTQ: calibrate, freeze, wrap. Returns the quantized copy (``model`` itself with
    ``inplace=True``).

    1. Observe: ``make_observer(spec)`` (default ``qc.MinMaxObserver(spec.bits,
       symmetric=spec.symmetric)``) is attached to every configured layer whose activation
       spec is an integer grid, one observer per layer.
    2. Calibrate: every batch of ``calibration_batches`` runs through the model being
       quantized, still in float, as ``model(batch)`` or ``run(model, batch)`` (``run`` gets
       the copy, e.g. ``lambda m, texts: m.encode(texts)``); ``progress`` shows a tqdm bar.
    3. Freeze: each observer's ``qparams()`` become the layer's fixed input grid, and each
       weight is fake-quantized by its spec; the layer is wrapped in a ``QuantizedLayer``.

    ``calibration_batches`` is read once into a list before anything else happens; an empty
    one raises ``ValueError``, as do unknown layer names and unsupported granularities, all
    before the model is copied or touched.
    """
    fn = "quantize_static"
    plan = _plan(model, config, inplace, fn, static=True)
    check_bool(progress, "progress", fn)
    if not callable(make_observer):
        raise TypeError(f"{fn}: make_observer must be callable: spec -> observer")
    if run is not None and not callable(run):
        raise TypeError(f"{fn}: run must be callable: run(model, batch)")
    if isinstance(calibration_batches, (torch.Tensor, str)):
        raise TypeError(f"{fn}: calibration_batches must be a list (or iterable) of batches; "
                        "wrap a single batch as [batch]")
    batches = list(calibration_batches)
    if not batches:
        raise ValueError(f"{fn}: no calibration batches were given; static PTQ needs "
                         "representative inputs to choose the activation ranges")
    observers = {n: make_observer(c.activation) for n, c in plan.items()
                 if c.activation is not None and not c.activation.is_float}
    for name, obs in observers.items():
        if not (callable(getattr(obs, "observe", None)) and callable(getattr(obs, "qparams",
                                                                             None))):
            raise TypeError(f"{fn}: make_observer returned {type(obs).__name__} for {name!r}; "
                            "expected an observer with observe() and qparams()")
    target = model if inplace else copy.deepcopy(model)
    if observers:
        observe_inputs(target, observers, batches, progress=progress,
                       run=None if run is None else (lambda batch: run(target, batch)))
    frozen = {n: o.qparams() for n, o in observers.items()}
    return swap_layers(target, lambda name, layer: QuantizedLayer(layer, plan[name],
                                                                  frozen.get(name)),
                       plan, inplace=True)


def quantize_dynamic(model: nn.Module, config: QuantConfig, *, inplace: bool = False
                     ) -> nn.Module:
    """Dynamic PTQ: weights fake-quantized ahead of time by each layer's weight spec; each
    input's grid computed from that input at run time by its activation spec (per
    ``"tensor"`` or per ``"token"``, one scale per row of the last dimension). Returns the
    quantized copy (``model`` itself with ``inplace=True``); bad configs raise first."""
    plan = _plan(model, config, inplace, "quantize_dynamic", static=False)
    target = model if inplace else copy.deepcopy(model)
    return swap_layers(target, lambda name, layer: QuantizedLayer(layer, plan[name]), plan,
                       inplace=True)


# ---------------------------------------------------------------- inspecting the result


def quantized_layers(model: nn.Module) -> dict[str, QuantizedLayer]:
    """``{name: QuantizedLayer}`` of a model returned by the PTQ flows, in model order."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"quantized_layers: expected an nn.Module, got {type(model).__name__}")
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantizedLayer)}


def ptq_model_nbytes(model: nn.Module) -> int:
    """Bytes a deployed file would hold: each ``QuantizedLayer``'s weight packed at its bits
    with its scales (``QuantizedLayer.weight_nbytes``), every other parameter and buffer
    (biases, norms, embeddings, float layers) at its own size."""
    wrapped = quantized_layers(model)
    skip = {id(q.layer.weight) for q in wrapped.values()}
    rest = sum(tensor_nbytes(t) for t in list(model.parameters()) + list(model.buffers())
               if id(t) not in skip)
    return rest + sum(q.weight_nbytes() for q in wrapped.values())


def serialized_nbytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``: the size of any model as saved, PyTorch's
    packed quantized layers included."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def torch_dynamic_int8(model: nn.Module, *, types: Sequence[type] = (nn.Linear,)
                       ) -> tuple[nn.Module | None, str]:
    """PyTorch's own dynamic int8 of a copy of ``model``: ``(quantized model, "")``, or
    ``(None, reason)`` where this PyTorch has no ``torch.ao.quantization.quantize_dynamic`` or
    no x86/fbgemm engine, or the call fails.

    Its defaults on x86: weights int8 symmetric **per tensor** (``[-128, 127]``), activations
    uint8 per tensor from each input's min and max with ``reduce_range=True``, i.e. 7 bits
    (``[0, 127]``), whatever the CPU. The API is deprecated in recent PyTorch: its deprecation
    warnings are silenced here only, inside this call, by the same filter as the package's
    ``FbgemmDynamicLinear`` (``warnings.catch_warnings`` with messages matching "deprecat").
    """
    from .engines import _engine, _fbgemm_engine, _quiet_quantized_ops

    if not isinstance(model, nn.Module):
        raise TypeError(f"torch_dynamic_int8: expected an nn.Module, got {type(model).__name__}")
    engine = _fbgemm_engine()
    if engine is None:
        return None, ("this PyTorch has no x86/fbgemm quantized engine (supported: "
                      f"{torch.backends.quantized.supported_engines})")
    try:
        with _quiet_quantized_ops():
            from torch.ao.quantization import quantize_dynamic as _torch_quantize_dynamic
            with _engine(engine):
                q = _torch_quantize_dynamic(copy.deepcopy(model), set(types), dtype=torch.qint8)
    except (ImportError, AttributeError, RuntimeError, NotImplementedError) as err:
        return None, f"torch.ao.quantization.quantize_dynamic failed: {type(err).__name__}: {err}"
    return q, ""
