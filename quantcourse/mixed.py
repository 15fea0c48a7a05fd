"""Mixed precision: how much each layer suffers when quantized alone, what each choice costs in
bytes, and the per-layer allocation that fits a size budget with the least predicted loss.

Introduced in ``12_mixed_precision.ipynb``. The flow is:

1. ``layer_nbytes(model, candidates)``: bytes of each layer's weight (codes + scales, or 2 bytes
   a value for ``"fp16"``/``"bf16"``) at each candidate format;
2. ``layer_sensitivity(model, quality, candidates)``: the quality drop when only that layer is
   quantized to that format (every other layer float), measured with the caller's function;
3. ``allocate_bits(sensitivity, sizes, budget)``: the allocation whose summed drops (the
   *predicted* loss, assuming the layers' drops add up) is smallest among those whose summed
   bytes fit the budget. It is an exact multiple-choice knapsack solved by dynamic programming
   over the budget's slack above the smallest allocation, cut into ``cells`` steps (sizes are
   rounded *up* to whole steps, so the answer always fits; with ``cells`` at least the slack in
   bytes it is the exact optimum);
4. ``qc.quantize_model_weights(model, allocation.bits)`` applies it; ``allocation_nbytes``
   counts the whole model's bytes under it; ``pareto_front`` keeps the (size, loss) points that
   no other point beats on both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ._validate import check_bool, check_choice, check_int
from .affine import asymmetric_qparams, symmetric_qparams
from .metrics import quantized_nbytes, tensor_nbytes
from .nn import FLOAT_FORMATS, check_bits_or_format, quantizable_layers, quantize_weight

__all__ = [
    "Allocation",
    "layer_nbytes",
    "layer_sensitivity",
    "allocation_nbytes",
    "allocate_bits",
    "pareto_front",
]

Format = int | str


def _check_candidates(candidates: Iterable[Format], fn: str) -> tuple[Format, ...]:
    if isinstance(candidates, (str, int)):
        candidates = (candidates,)
    cands = tuple(candidates)
    if not cands:
        raise ValueError(f"{fn}: candidates is empty; give at least one bit width or float "
                         f"format (e.g. (8, 4, 'fp16'))")
    for c in cands:
        check_bits_or_format(c, fn)
    if len(set(cands)) != len(cands):
        raise ValueError(f"{fn}: candidates has repeats: {cands}")
    return cands


def _check_scheme(granularity: str, group_size: int | None, symmetric: bool, fn: str) -> None:
    check_choice(granularity, "granularity", ("tensor", "channel", "group"), fn)
    check_bool(symmetric, "symmetric", fn)
    if (granularity == "group") != (group_size is not None):
        raise ValueError(f"{fn}: give group_size exactly when granularity is 'group'")
    if group_size is not None:
        check_int(group_size, "group_size", fn)


def _weight_nbytes(w: torch.Tensor, fmt: Format, granularity: str, group_size: int | None,
                   symmetric: bool) -> int:
    """Bytes that ``w`` needs stored in ``fmt``: packed codes + scales (+ zero points)."""
    if isinstance(fmt, str):
        return w.numel() * torch.finfo(FLOAT_FORMATS[fmt]).bits // 8
    make = symmetric_qparams if symmetric else asymmetric_qparams
    w = w.detach().float()
    if granularity == "tensor":
        qp = make(w, fmt)
    elif granularity == "channel":
        qp = make(w, fmt, axis=0)
    else:  # the layout of quantize_weight: flattened rows, zero-padded to whole groups
        rows = w.reshape(w.shape[0], -1)
        qp = make(torch.nn.functional.pad(rows, (0, -rows.shape[1] % group_size)), fmt,
                  group_size=group_size)
    return quantized_nbytes(w.numel(), qp)


def layer_nbytes(
    model: nn.Module,
    candidates: Iterable[Format],
    *,
    layers: Iterable[str] | None = None,
    granularity: str = "channel",
    group_size: int | None = None,
    symmetric: bool = True,
) -> dict[str, dict[Format, int]]:
    """``{layer: {format: bytes}}``: the bytes of each layer's weight stored in each candidate
    format (integer widths: packed codes plus float32 scales, and zero points when asymmetric,
    at the given granularity; ``"fp16"``/``"bf16"``: 2 bytes a value). Biases are not counted
    (they stay float whatever the allocation; ``allocation_nbytes`` counts them)."""
    fn = "layer_nbytes"
    cands = _check_candidates(candidates, fn)
    _check_scheme(granularity, group_size, symmetric, fn)
    chosen = quantizable_layers(model, names=layers)
    return {name: {c: _weight_nbytes(m.weight, c, granularity, group_size, symmetric)
                   for c in cands} for name, m in chosen.items()}


def layer_sensitivity(
    model: nn.Module,
    quality: Callable[[nn.Module], float],
    candidates: Iterable[Format],
    *,
    layers: Iterable[str] | None = None,
    granularity: str = "channel",
    group_size: int | None = None,
    symmetric: bool = True,
    baseline: float | None = None,
) -> dict[str, dict[Format, float]]:
    """``{layer: {format: drop}}``: ``quality(model)`` with every weight float, minus
    ``quality(model)`` with only that layer's weight fake-quantized to that format.

    ``quality`` maps the model to a number where higher is better (to use a loss such as a KL
    divergence, pass ``lambda m: -kl(m)``; the drop is then the rise in the loss). ``baseline``
    skips the float evaluation when the caller has it. Each layer's weight is swapped in place
    and restored afterwards (also after an exception), so no copy of the model is made and the
    model is unchanged on return.
    """
    fn = "layer_sensitivity"
    if not callable(quality):
        raise TypeError(f"{fn}: quality must be a function of the model, "
                        f"got {type(quality).__name__}")
    cands = _check_candidates(candidates, fn)
    _check_scheme(granularity, group_size, symmetric, fn)
    chosen = quantizable_layers(model, names=layers)
    if not chosen:
        raise ValueError(f"{fn}: the model has no quantizable layer")

    def measure() -> float:
        q = quality(model)
        if isinstance(q, torch.Tensor):
            q = q.item()
        if not isinstance(q, (int, float)) or not math.isfinite(q):
            raise ValueError(f"{fn}: quality must return a finite number, got {q!r}")
        return float(q)

    base = measure() if baseline is None else float(baseline)
    out: dict[str, dict[Format, float]] = {}
    for name, layer in chosen.items():
        w = layer.weight
        original = w.detach().clone()
        try:
            out[name] = {}
            for c in cands:
                with torch.no_grad():
                    w.copy_(quantize_weight(original, c, granularity=granularity,
                                            group_size=group_size, symmetric=symmetric)[0])
                out[name][c] = base - measure()
        finally:
            with torch.no_grad():
                w.copy_(original)
    return out


def allocation_nbytes(
    model: nn.Module,
    allocation: Mapping[str, Format],
    *,
    granularity: str = "channel",
    group_size: int | None = None,
    symmetric: bool = True,
) -> int:
    """Bytes of the whole model with each named layer's weight stored in its allocated format
    (as ``layer_nbytes`` counts it); every other parameter and buffer (biases, norms,
    embeddings, layers the allocation does not name) at its stored size."""
    fn = "allocation_nbytes"
    if not isinstance(allocation, Mapping):
        raise TypeError(f"{fn}: allocation must be a {{layer: bits}} mapping, "
                        f"got {type(allocation).__name__}")
    _check_scheme(granularity, group_size, symmetric, fn)
    for fmt in allocation.values():
        check_bits_or_format(fmt, fn)
    chosen = quantizable_layers(model, names=list(allocation))
    replaced = {id(m.weight): (m.weight, allocation[n]) for n, m in chosen.items()}
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in replaced:
            total += _weight_nbytes(t, replaced[id(t)][1], granularity, group_size, symmetric)
        else:
            total += tensor_nbytes(t)
    return total


@dataclass(frozen=True)
class Allocation:
    """A per-layer choice of format: ``bits`` (``{layer: bits or float format}``, in layer
    order), the summed layer ``nbytes`` it needs, and its ``predicted_loss`` (the summed
    per-layer drops)."""

    bits: dict[str, Format]
    nbytes: int
    predicted_loss: float


def _options(sensitivity, sizes, fn) -> list[tuple[str, list[tuple[Format, int, float]]]]:
    if not isinstance(sensitivity, Mapping) or not isinstance(sizes, Mapping):
        raise TypeError(f"{fn}: sensitivity and sizes must be {{layer: {{format: value}}}} "
                        "mappings (from layer_sensitivity and layer_nbytes)")
    if not sensitivity:
        raise ValueError(f"{fn}: sensitivity is empty: there is no layer to allocate")
    unknown = [n for n in sensitivity if n not in sizes]
    if unknown:
        raise ValueError(f"{fn}: no sizes for layer(s) {', '.join(map(repr, unknown))}; "
                         f"sizes has {len(sizes)}: {', '.join(list(sizes)[:6])}"
                         + (", ..." if len(sizes) > 6 else ""))
    table = []
    for name, drops in sensitivity.items():
        if not isinstance(drops, Mapping) or not drops:
            raise ValueError(f"{fn}: layer {name!r} has no candidate formats")
        missing = [c for c in drops if c not in sizes[name]]
        if missing:
            raise ValueError(f"{fn}: layer {name!r} has no size for format(s) {missing}")
        opts = []
        for c, d in drops.items():
            nbytes, loss = sizes[name][c], float(d)
            if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)) or nbytes < 0:
                raise ValueError(f"{fn}: size of {name!r} at {c!r} must be a non-negative "
                                 f"integer number of bytes, got {nbytes!r}")
            if not math.isfinite(loss):
                raise ValueError(f"{fn}: drop of {name!r} at {c!r} is not finite: {d!r}")
            opts.append((c, int(nbytes), loss))
        table.append((name, opts))
    return table


def allocate_bits(
    sensitivity: Mapping[str, Mapping[Format, float]],
    sizes: Mapping[str, Mapping[Format, int]],
    budget: int,
    *,
    cells: int = 65536,
) -> Allocation:
    """The allocation with the least predicted loss (summed drops) whose summed layer bytes
    are at most ``budget``: one format per layer of ``sensitivity``, among that layer's formats.

    Method: an exact multiple-choice knapsack by dynamic programming. Each option's cost is its
    bytes above the layer's smallest option; the slack ``budget - smallest allocation`` is cut
    into at most ``cells`` equal steps and every cost rounded up to whole steps, so the result
    always fits, and it is the exact optimum when the slack is at most ``cells`` bytes (or every
    cost a multiple of the step). Time: layers x options x cells. A budget below the smallest
    allocation raises ``ValueError`` before any work, naming that size.
    """
    fn = "allocate_bits"
    check_int(cells, "cells", fn)
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise TypeError(f"{fn}: budget must be an integer number of bytes, "
                        f"got {type(budget).__name__}")
    table = _options(sensitivity, sizes, fn)
    floor = [min(n for _, n, _ in opts) for _, opts in table]
    smallest = sum(floor)
    if budget < smallest:
        raise ValueError(f"{fn}: budget of {int(budget):,} bytes is below the smallest possible "
                         f"allocation, {smallest:,} bytes (every layer at its smallest format)")
    slack = int(budget) - smallest
    step = max(1, math.ceil(slack / cells))
    n_cells = slack // step
    best = np.zeros(n_cells + 1)  # least loss of the layers so far within b steps of extra
    choices = []
    for (_, opts), lo in zip(table, floor, strict=True):
        new = np.full(n_cells + 1, np.inf)
        pick = np.zeros(n_cells + 1, dtype=np.int32)
        for k, (_, nbytes, loss) in enumerate(opts):
            cost = math.ceil((nbytes - lo) / step)
            if cost > n_cells:
                continue
            cand = np.full(n_cells + 1, np.inf)
            cand[cost:] = best[: n_cells + 1 - cost] + loss
            better = cand < new
            new[better], pick[better] = cand[better], k
        best = new
        choices.append(pick)
    b = n_cells
    chosen: dict[str, Format] = {}
    for (name, opts), pick, lo in zip(reversed(table), reversed(choices), reversed(floor),
                                      strict=True):
        fmt, nbytes, _ = opts[int(pick[b])]
        chosen[name] = fmt
        b -= math.ceil((nbytes - lo) / step)
    bits = {name: chosen[name] for name, _ in table}
    total = sum(sizes[n][f] for n, f in bits.items())
    loss = sum(float(sensitivity[n][f]) for n, f in bits.items())
    return Allocation(bits=bits, nbytes=int(total), predicted_loss=loss)


def pareto_front(sizes: Sequence[float], losses: Sequence[float]) -> list[int]:
    """Indices of the points ``(sizes[i], losses[i])`` that no other point dominates (no other
    is as small and as good, and strictly better in one), sorted by size; of identical points
    the first is kept. Lower is better on both axes (pass ``-quality`` for a quality)."""
    fn = "pareto_front"
    s = [float(v) for v in sizes]
    loss = [float(v) for v in losses]
    if len(s) != len(loss):
        raise ValueError(f"{fn}: {len(s)} sizes but {len(loss)} losses")
    bad = [i for i in range(len(s)) if not (math.isfinite(s[i]) and math.isfinite(loss[i]))]
    if bad:
        raise ValueError(f"{fn}: {len(bad)} point(s) are NaN or infinite, the first at "
                         f"index {bad[0]}")
    order = sorted(range(len(s)), key=lambda i: (s[i], loss[i], i))
    front: list[int] = []
    for i in order:
        if not front or loss[i] < loss[front[-1]]:
            front.append(i)
    return front
