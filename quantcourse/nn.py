"""Model-level helpers: which layers to quantize, fake-quantized copies of a model's weights,
forward hooks that capture, observe or fake-quantize layer inputs, layer swaps, MAC counts.
The per-layer config that the PTQ and QAT flows read is in ``qconfig``.

Introduced in ``05_granularity_and_calibration.ipynb`` (weights per layer, calibration through
hooks); used by notebooks 06, 09, 10-12 and 15 and by ``deploy``. Everything here works on a copy
unless ``inplace=True`` is asked for: the model handed in is never modified behind your back.
"""

from __future__ import annotations

import contextlib
import copy
import random
from collections.abc import Callable, Iterable, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from ._validate import check_bool, check_choice, check_float_tensor, check_int
from .affine import QParams, asymmetric_qparams, fake_quantize, symmetric_qparams

__all__ = [
    "QUANTIZABLE_TYPES",
    "FLOAT_FORMATS",
    "seed_everything",
    "quantizable_layers",
    "quantize_weight",
    "quantize_model_weights",
    "fake_quantize_dynamic",
    "input_hooks",
    "capture_inputs",
    "capture_call",
    "calibrate",
    "observe_inputs",
    "quantized_inputs",
    "swap_layers",
    "count_macs",
]

QUANTIZABLE_TYPES: tuple[type, ...] = (nn.Conv2d, nn.Linear)
# Float formats a layer may keep instead of an integer grid: a round trip through the format.
FLOAT_FORMATS = {"fp16": torch.float16, "bf16": torch.bfloat16}
WEIGHT_GRANULARITIES = ("tensor", "channel", "group")
ACTIVATION_GRANULARITIES = ("tensor", "token")


def seed_everything(seed: int, *, threads: int | None = None) -> None:
    """Seed Python's, NumPy's and PyTorch's generators; optionally fix PyTorch's thread count
    (one thread makes float sums run in the same order on every machine)."""
    check_int(seed, "seed", "seed_everything", minimum=0, maximum=2**32 - 1)  # NumPy's limit
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if threads is not None:
        torch.set_num_threads(check_int(threads, "threads", "seed_everything"))


# ---------------------------------------------------------------- which layers


def quantizable_layers(
    model: nn.Module,
    *,
    types: tuple[type, ...] = QUANTIZABLE_TYPES,
    skip: Iterable[str] = (),
    names: Iterable[str] | None = None,
) -> dict[str, nn.Module]:
    """``{name: layer}`` in model order for every module of ``types`` whose name contains none
    of the substrings in ``skip``; ``names`` restricts the result to those layers (a name that is
    not a quantizable layer raises ``ValueError``)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"quantizable_layers: expected an nn.Module, got {type(model).__name__}")
    skip = (skip,) if isinstance(skip, str) else tuple(skip)
    found = {n: m for n, m in model.named_modules()
             if isinstance(m, types) and not any(s in n for s in skip)}
    if names is None:
        return found
    names = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in found]
    if unknown:
        raise ValueError(
            f"quantizable_layers: no quantizable layer named {', '.join(map(repr, unknown))}; "
            f"the model has {len(found)}: {', '.join(list(found)[:8])}"
            + (", ..." if len(found) > 8 else "")
        )
    return {n: found[n] for n in names}


def _resolve_layers(
    model: nn.Module, layers: Iterable[str] | None, types: tuple[type, ...] = QUANTIZABLE_TYPES
) -> dict[str, nn.Module]:
    return quantizable_layers(model, types=types, names=layers)


# ---------------------------------------------------------------- one tensor's scheme


def check_bits_or_format(bits: object, fn: str) -> None:
    """Raise unless ``bits`` is an int in [2, 16] or the name of a float format."""
    if isinstance(bits, str):
        check_choice(bits, "bits", tuple(FLOAT_FORMATS), fn)
    else:
        check_int(bits, "bits", fn)
        if not 2 <= bits <= 16:
            raise ValueError(f"{fn}: bits must be between 2 and 16 or one of "
                             f"{', '.join(FLOAT_FORMATS)}, got {bits}")


def _float_round_trip(x: torch.Tensor, fmt: str) -> torch.Tensor:
    return x.to(FLOAT_FORMATS[fmt]).to(x.dtype)


def quantize_weight(
    w: torch.Tensor,
    bits: int | str = 8,
    *,
    granularity: str = "channel",
    group_size: int | None = None,
    symmetric: bool = True,
) -> tuple[torch.Tensor, QParams | None]:
    """Fake-quantize a weight (any shape, output channels on axis 0); return it with its
    ``QParams``. ``granularity``: one scale for the ``"tensor"``, per output ``"channel"``, or per
    ``"group"`` of ``group_size`` inputs along each flattened row (zero-padded to whole groups).
    ``bits`` may name a float format (``"fp16"``, ``"bf16"``): a round trip, ``QParams`` None."""
    fn = "quantize_weight"
    check_float_tensor(w, fn)
    check_bits_or_format(bits, fn)
    check_choice(granularity, "granularity", WEIGHT_GRANULARITIES, fn)
    check_bool(symmetric, "symmetric", fn)
    if granularity == "group":
        if group_size is None:
            raise ValueError(f"{fn}: granularity 'group' needs a group_size")
        check_int(group_size, "group_size", fn)
    elif group_size is not None:
        raise ValueError(f"{fn}: group_size is only used with granularity 'group'")
    if isinstance(bits, str):
        return _float_round_trip(w, bits), None
    make = symmetric_qparams if symmetric else asymmetric_qparams
    if granularity == "tensor":
        qp = make(w, bits)
        return fake_quantize(w, qp), qp
    if granularity == "channel":
        qp = make(w, bits, axis=0)
        return fake_quantize(w, qp), qp
    rows = w.reshape(w.shape[0], -1)
    padded = torch.nn.functional.pad(rows, (0, -rows.shape[1] % group_size))
    qp = make(padded, bits, group_size=group_size)
    return fake_quantize(padded, qp)[:, : rows.shape[1]].reshape(w.shape), qp


def fake_quantize_dynamic(
    x: torch.Tensor, bits: int | str = 8, *, symmetric: bool = False, granularity: str = "tensor"
) -> torch.Tensor:
    """Dynamic fake quantization of an activation: the range comes from ``x`` itself, for the
    whole ``"tensor"`` or per ``"token"`` (one scale per row of the last dimension)."""
    fn = "fake_quantize_dynamic"
    check_float_tensor(x, fn)
    check_bits_or_format(bits, fn)
    check_choice(granularity, "granularity", ACTIVATION_GRANULARITIES, fn)
    check_bool(symmetric, "symmetric", fn)
    if isinstance(bits, str):
        return _float_round_trip(x, bits)
    if granularity == "token" and x.ndim == 0:
        raise ValueError(f"{fn}: granularity 'token' needs a tensor with a feature dimension, "
                         "got a 0-d tensor")
    if x.numel() == 0:
        return x.clone()
    make = symmetric_qparams if symmetric else asymmetric_qparams
    if granularity == "token":
        flat = x.reshape(-1, x.shape[-1])
        return fake_quantize(flat, make(flat, bits, axis=0)).reshape(x.shape)
    return fake_quantize(x, make(x, bits))


def quantize_model_weights(
    model: nn.Module,
    bits: int | str | Mapping[str, int | str] = 8,
    *,
    granularity: str = "channel",
    group_size: int | None = None,
    symmetric: bool = True,
    layers: Iterable[str] | None = None,
    inplace: bool = False,
    types: tuple[type, ...] = QUANTIZABLE_TYPES,
) -> nn.Module:
    """A copy of ``model`` (the model itself with ``inplace=True``) whose quantizable layers'
    weights are fake-quantized. ``bits`` is one width (or float format) for every layer in
    ``layers`` (default: all quantizable layers) or a ``{layer name: bits}`` mapping; layers not
    named stay float. Biases stay float. ``types`` widens "quantizable" (e.g. ``nn.Embedding``
    for the embedding tables: one scale per table row with ``granularity="channel"``)."""
    fn = "quantize_model_weights"
    check_bool(inplace, "inplace", fn)
    if isinstance(bits, Mapping):
        if layers is not None:
            raise ValueError(f"{fn}: give per-layer bits as a mapping or layers, not both")
        per_layer = dict(bits)
        chosen = quantizable_layers(model, types=types, names=per_layer)
    else:
        chosen = _resolve_layers(model, layers, types)
        per_layer = dict.fromkeys(chosen, bits)
    for b in per_layer.values():
        check_bits_or_format(b, fn)
    target = model if inplace else copy.deepcopy(model)
    mods = dict(target.named_modules())
    with torch.no_grad():
        for name in chosen:
            w = mods[name].weight
            w.copy_(quantize_weight(w.detach(), per_layer[name], granularity=granularity,
                                    group_size=group_size, symmetric=symmetric)[0])
    return target


# ---------------------------------------------------------------- hooks on layer inputs


@contextlib.contextmanager
def input_hooks(
    model: nn.Module,
    fn: Callable[[str, nn.Module, torch.Tensor], torch.Tensor | None],
    layers: Iterable[str] | None = None,
    *,
    types: tuple[type, ...] = QUANTIZABLE_TYPES,
) -> Iterator[nn.Module]:
    """While the ``with`` block runs, call ``fn(name, layer, x)`` on the first positional input
    ``x`` of every chosen layer (modules of ``types``; by default the quantizable layers) before
    its forward; a tensor that ``fn`` returns replaces ``x``. The hooks are removed on exit, also
    after an exception."""
    if not callable(fn):
        raise TypeError(f"input_hooks: fn must be callable, got {type(fn).__name__}")
    chosen = _resolve_layers(model, layers, types)

    def make(name: str):
        def hook(layer, args):
            out = fn(name, layer, args[0])
            if out is None:
                return None
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"input_hooks: fn returned {type(out).__name__} for {name!r}; "
                                "return a tensor to replace the input, or None to keep it")
            return (out, *args[1:])
        return hook

    handles = [layer.register_forward_pre_hook(make(name)) for name, layer in chosen.items()]
    try:
        yield model
    finally:
        for h in handles:
            h.remove()


def capture_inputs(
    model: nn.Module,
    run: Callable[[], object],
    layers: Iterable[str] | None = None,
    *,
    keep: str = "last",
    types: tuple[type, ...] = QUANTIZABLE_TYPES,
) -> dict[str, torch.Tensor] | dict[str, list[torch.Tensor]]:
    """Call ``run()`` once (no gradients) and return the inputs the chosen layers saw: the last
    one per layer (``keep="last"``) or a list of every call's input (``keep="all"``). ``types``
    widens the choice beyond the quantizable layers (e.g. ``nn.Embedding``: token ids)."""
    check_choice(keep, "keep", ("last", "all"), "capture_inputs")
    seen: dict[str, list[torch.Tensor]] = {}

    def record(name, _layer, x):
        seen.setdefault(name, []).append(x.detach().clone())

    with input_hooks(model, record, layers, types=types), torch.no_grad():
        run()
    return {k: v[-1] for k, v in seen.items()} if keep == "last" else seen


class _Stop(Exception):
    """Raised by ``capture_call``'s hook to end the run once the call is seen."""


def capture_call(
    module: nn.Module, run: Callable[[], object], *, stop: bool = True
) -> tuple[tuple, dict]:
    """Call ``run()`` (no gradients) and return the positional and keyword arguments of the
    first call to ``module``. With ``stop=True`` the run ends right there, so nothing after
    ``module`` is computed (how sequential methods such as GPTQ feed one block at a time)."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"capture_call: expected an nn.Module, got {type(module).__name__}")
    check_bool(stop, "stop", "capture_call")
    box: dict = {}

    def grab(_module, args, kwargs):
        if "args" not in box:
            box.update(args=args, kwargs=dict(kwargs))
            if stop:
                raise _Stop

    handle = module.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            run()
    except _Stop:
        pass
    finally:
        handle.remove()
    if "args" not in box:
        raise RuntimeError("capture_call: run() never called the module")
    return box["args"], box["kwargs"]


def observe_inputs(
    model: nn.Module,
    observers: Mapping[str, object],
    batches: Iterable,
    *,
    run: Callable[[object], object] | None = None,
    progress: bool = False,
) -> int:
    """Feed every batch through ``model`` (or ``run(batch)``) while each named layer's input
    goes to its observer's ``observe``; return the number of batches. The building block of
    ``calibrate`` for callers that choose one observer per layer. No batches: ``ValueError``."""
    run = model if run is None else run
    items = batches
    if progress:
        from tqdm.auto import tqdm
        items = tqdm(batches, desc="calibrating", unit="batch")

    def observe(name, _layer, x):
        observers[name].observe(x)  # returns nothing: an observer never changes the input

    n = 0
    with input_hooks(model, observe, list(observers)), torch.no_grad():
        for batch in items:
            run(batch)
            n += 1
    if n == 0:
        raise ValueError("calibrate: no calibration batches were given")
    return n


def calibrate(
    model: nn.Module,
    make_observer: Callable[[], object],
    batches: Iterable,
    *,
    layers: Iterable[str] | None = None,
    run: Callable[[object], object] | None = None,
    progress: bool = False,
) -> dict[str, QParams]:
    """Observe every chosen layer's input over ``batches`` (each fed as ``model(batch)``, or
    ``run(batch)``) with a fresh ``make_observer()`` per layer; return ``{layer: QParams}``.
    An empty ``batches`` raises ``ValueError`` before any observer is asked for its range."""
    if not callable(make_observer) or (not isinstance(make_observer, type)
                                       and hasattr(make_observer, "observe")):
        raise TypeError("calibrate: make_observer must be a callable that makes a fresh "
                        "observer (e.g. lambda: qc.MinMaxObserver(8))")
    chosen = _resolve_layers(model, layers)
    observers = {n: make_observer() for n in chosen}
    observe_inputs(model, observers, batches, run=run, progress=progress)
    return {name: o.qparams() for name, o in observers.items()}


@contextlib.contextmanager
def quantized_inputs(
    model: nn.Module,
    quantizer: Mapping[str, QParams] | Callable[[torch.Tensor], torch.Tensor],
    layers: Iterable[str] | None = None,
) -> Iterator[nn.Module]:
    """While the ``with`` block runs, fake-quantize the chosen layers' inputs: statically with
    ``{layer: QParams}`` (from ``calibrate``; by default the layers it names), or dynamically
    with a function of the input (e.g. ``lambda x: qc.fake_quantize_dynamic(x, 8)``)."""
    if isinstance(quantizer, Mapping):
        qps = dict(quantizer)
        names = list(qps) if layers is None else list(layers)
        missing = [n for n in names if n not in qps]
        if missing:
            raise ValueError(f"quantized_inputs: no QParams for {', '.join(map(repr, missing))}")

        def fn(name, _layer, x):
            return fake_quantize(x, qps[name])
    elif callable(quantizer):
        names = layers

        def fn(_name, _layer, x):
            return quantizer(x)
    else:
        raise TypeError("quantized_inputs: quantizer must be a {layer: QParams} mapping or a "
                        f"function of the input, got {type(quantizer).__name__}")
    with input_hooks(model, fn, names):
        yield model


# ---------------------------------------------------------------- swapping and counting


def swap_layers(
    model: nn.Module,
    make: Callable[[str, nn.Module], nn.Module | None],
    layers: Iterable[str] | None = None,
    *,
    inplace: bool = False,
) -> nn.Module:
    """A copy of ``model`` (itself with ``inplace=True``) in which every chosen layer is
    replaced by ``make(name, layer)``; where ``make`` returns None the layer stays."""
    check_bool(inplace, "inplace", "swap_layers")
    target = model if inplace else copy.deepcopy(model)
    for name, layer in _resolve_layers(target, layers).items():
        new = make(name, layer)
        if new is None:
            continue
        if not isinstance(new, nn.Module):
            raise TypeError(f"swap_layers: make returned {type(new).__name__} for {name!r}, "
                            "expected an nn.Module or None")
        parent_name, _, child = name.rpartition(".")
        parent = target.get_submodule(parent_name) if parent_name else target
        setattr(parent, child, new)
    return target


def count_macs(
    model: nn.Module, run: Callable[[], object], layers: Iterable[str] | None = None
) -> tuple[dict[str, int], dict[str, tuple[int, ...]]]:
    """Multiply-accumulates of every chosen Conv2d and Linear layer during ``run()``, counted
    from the output sizes by forward hooks, and the shape of each layer's first input."""
    chosen = _resolve_layers(model, layers)
    macs: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...]] = {}

    def make(name: str):
        def hook(mod, inp, out):
            if isinstance(mod, nn.Conv2d):
                per_output = mod.in_channels // mod.groups * int(np.prod(mod.kernel_size))
            else:
                per_output = mod.in_features
            macs[name] = macs.get(name, 0) + out.numel() * per_output
            shapes.setdefault(name, tuple(inp[0].shape))
        return hook

    handles = [m.register_forward_hook(make(n)) for n, m in chosen.items()]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return macs, shapes
