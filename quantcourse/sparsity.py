"""Sparsity: magnitude pruning (unstructured and N:M), prune-then-quantize sizes, distillation.

Introduced in ``19_sparsity_pruning_distillation.ipynb``.

Pruning
    ``magnitude_mask(w, sparsity)`` keeps the largest ``|w|`` and drops the
    ``floor(sparsity * numel)`` smallest (ties broken by position, so the result is
    deterministic); ``magnitude_prune`` applies it. ``nm_mask(w, n, m)`` / ``nm_prune`` keep
    the ``n`` largest ``|w|`` of every ``m`` consecutive weights along the input dimension (a
    weight's dimensions after the first, flattened: a linear layer's columns, a convolution's
    ``in_channels * kh * kw``). ``prune_masks(model, ...)`` builds one mask per weight tensor,
    with one threshold over all of them (``scope="global"``), one per tensor
    (``scope="layer"``) or N:M; ``apply_masks(model, masks)`` returns a pruned copy.

Stored size (Deep Compression: prune, then quantize)
    ``sparse_nbytes(mask, qp)`` counts the bytes a pruned (and optionally quantized) tensor
    stores: the kept values (float32, or ``qp``'s codes packed at ``qp.bits`` plus its scales,
    through ``quantized_nbytes``) plus where they are. Three index formats:

    - ``"bitmask"``: one bit per position, ``ceil(numel / 8)`` bytes;
    - ``"relative"``: as in Deep Compression, each stored entry carries the number of zeros
      skipped since the previous entry in ``index_bits`` bits; a run longer than
      ``2**index_bits - 1`` zeros needs a filler entry (a stored zero value) every
      ``2**index_bits`` positions. Codes and indices are two packed streams;
    - ``"nm"``: an N:M mask stores ``ceil(log2 m)`` bits per kept weight (its position in its
      group of ``m``; 2 bits for 2:4, as sparse tensor cores store it).

    ``relative_index_encode(mask, index_bits)`` builds the relative stream itself (positions
    and skips, fillers included) and ``relative_index_decode`` inverts it, so the count can be
    checked against real packed bytes. ``sparse_model_nbytes(model, masks, bits=...)`` adds
    up a whole model, unpruned weights quantized at the same width and everything else at
    its own size.

Distillation
    ``distillation_loss(student_logits, teacher_logits, targets, temperature=T, alpha=a)`` is
    ``a * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - a) * CE(student,
    targets)``, both averaged over the batch (Hinton et al., 2015). The ``T^2`` keeps the soft
    term's gradients the same size whatever the temperature.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ._validate import (
    check_choice,
    check_float_tensor,
    check_int_in,
    check_real_in,
    require_finite,
)
from .affine import QParams, symmetric_qparams
from .metrics import quantized_nbytes, tensor_nbytes

__all__ = [
    "magnitude_mask",
    "magnitude_prune",
    "nm_mask",
    "nm_prune",
    "prune_masks",
    "apply_masks",
    "sparse_nbytes",
    "sparse_model_nbytes",
    "relative_index_encode",
    "relative_index_decode",
    "distillation_loss",
    "SPARSE_FORMATS",
]

SPARSE_FORMATS = ("bitmask", "relative", "nm")


# ---------------------------------------------------------------- validation


def _check_weights(w: object, fn: str) -> torch.Tensor:
    check_float_tensor(w, fn)
    require_finite(w, fn, what="the weights hold", advice="magnitudes cannot be ranked")
    return w


def _check_sparsity(sparsity: object, fn: str) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
        raise TypeError(f"{fn}: sparsity must be a number in [0, 1), got {sparsity!r}")
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"{fn}: sparsity must lie in [0, 1) (the fraction of weights "
                         f"removed; 1 would remove them all), got {sparsity!r}")
    return float(sparsity)


def _check_nm(n: object, m: object, fn: str) -> tuple[int, int]:
    check_int_in(n, "n", fn)
    check_int_in(m, "m", fn)
    if n > m:
        raise ValueError(f"{fn}: N:M keeps n of every m weights, so n <= m; got n={n}, m={m}")
    return n, m


def _check_mask(mask: object, fn: str) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{fn}: expected a bool mask tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"{fn}: expected a bool mask (True = kept), got {mask.dtype}")
    return mask


def _rows(t: torch.Tensor) -> torch.Tensor:
    """The tensor as (outputs, inputs): dimensions after the first flattened (1-D: one row)."""
    return t.reshape(1, -1) if t.ndim <= 1 else t.reshape(t.shape[0], -1)


# ---------------------------------------------------------------- unstructured pruning


def _keep_largest(mag: torch.Tensor, n_prune: int) -> torch.Tensor:
    """A flat bool mask that drops the ``n_prune`` smallest magnitudes (ties: lower index)."""
    order = torch.argsort(mag.reshape(-1), stable=True)
    keep = torch.ones(mag.numel(), dtype=torch.bool, device=mag.device)
    keep[order[:n_prune]] = False
    return keep


def magnitude_mask(w: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Bool mask (True = kept) that removes the ``floor(sparsity * numel)`` smallest ``|w|``.

    ``sparsity`` lies in ``[0, 1)``. Equal magnitudes are removed in index order, so the mask
    is the same on every run.
    """
    fn = "magnitude_mask"
    sparsity = _check_sparsity(sparsity, fn)
    w = _check_weights(w, fn)
    n_prune = math.floor(sparsity * w.numel())
    return _keep_largest(w.detach().abs(), n_prune).reshape(w.shape)


def magnitude_prune(w: torch.Tensor, sparsity: float) -> torch.Tensor:
    """``w`` with its ``floor(sparsity * numel)`` smallest magnitudes set to zero (a copy)."""
    return w.detach() * magnitude_mask(w, sparsity)


# ---------------------------------------------------------------- N:M pruning


def nm_mask(w: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """Bool mask keeping the ``n`` largest ``|w|`` of every ``m`` consecutive input weights.

    Groups run along the input dimension: each output row's weights (dimensions after the
    first, flattened) are split into consecutive groups of ``m``, which must divide the row
    length. Ties are kept in index order.
    """
    fn = "nm_mask"
    n, m = _check_nm(n, m, fn)
    w = _check_weights(w, fn)
    rows = _rows(w.detach())
    if rows.shape[1] % m:
        raise ValueError(f"{fn}: m={m} does not divide the {rows.shape[1]} input weights per "
                         f"output row of a weight shaped {tuple(w.shape)}")
    groups = rows.abs().reshape(rows.shape[0], -1, m)
    order = torch.argsort(groups, dim=-1, descending=True, stable=True)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(-1, order[..., :n], True)
    return keep.reshape(w.shape)


def nm_prune(w: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """``w`` with all but the ``n`` largest ``|w|`` of every ``m`` input weights zeroed (a copy)."""
    return w.detach() * nm_mask(w, n, m)


# ---------------------------------------------------------------- whole models


def _weights(model: nn.Module, layers, fn: str) -> dict[str, torch.Tensor]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{fn}: expected an nn.Module, got {type(model).__name__}")
    params = dict(model.named_parameters())
    if layers is None:
        names = [k for k, p in params.items() if k.endswith("weight") and p.ndim >= 2]
    else:
        if isinstance(layers, str):
            raise TypeError(f"{fn}: layers must be a list of module names, got a string")
        names = [f"{name}.weight" for name in layers]
        missing = [k for k in names if k not in params]
        if missing:
            raise ValueError(f"{fn}: the model has no parameter(s) {missing}")
    if not names:
        raise ValueError(f"{fn}: no weight tensors to prune")
    return {k: params[k].detach() for k in names}


def prune_masks(
    model: nn.Module,
    sparsity: float | None = None,
    *,
    scope: str = "global",
    n: int | None = None,
    m: int | None = None,
    layers=None,
) -> dict[str, torch.Tensor]:
    """One bool mask per weight tensor, keyed by parameter name (``"fc1.weight"``).

    ``layers`` names the modules to prune (default: every parameter called ``weight`` with
    two or more dimensions). Unstructured: give ``sparsity`` and ``scope="global"`` (one
    magnitude threshold over all the chosen weights together) or ``scope="layer"`` (each
    tensor pruned to ``sparsity`` on its own). N:M: give ``n`` and ``m`` instead.
    """
    fn = "prune_masks"
    if (n is None) != (m is None):
        raise ValueError(f"{fn}: give both n and m for N:M pruning, got n={n}, m={m}")
    if n is not None:
        if sparsity is not None:
            raise ValueError(f"{fn}: give either sparsity or n and m, not both")
        _check_nm(n, m, fn)
        ws = _weights(model, layers, fn)
        return {k: nm_mask(w, n, m) for k, w in ws.items()}
    if sparsity is None:
        raise ValueError(f"{fn}: give a sparsity in [0, 1), or n and m for N:M pruning")
    sparsity = _check_sparsity(sparsity, fn)
    check_choice(scope, "scope", ("global", "layer"), fn)
    ws = _weights(model, layers, fn)
    for k, w in ws.items():
        _check_weights(w, f"{fn} ({k})")
    if scope == "layer":
        return {k: magnitude_mask(w, sparsity) for k, w in ws.items()}
    flat = torch.cat([w.abs().reshape(-1) for w in ws.values()])
    keep = _keep_largest(flat, math.floor(sparsity * flat.numel()))
    out, start = {}, 0
    for k, w in ws.items():
        out[k] = keep[start:start + w.numel()].reshape(w.shape)
        start += w.numel()
    return out


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    """A deep copy of ``model`` with each masked weight multiplied by its mask (zeros pruned)."""
    fn = "apply_masks"
    if not isinstance(model, nn.Module):
        raise TypeError(f"{fn}: expected an nn.Module, got {type(model).__name__}")
    params = dict(model.named_parameters())
    for k, mask in masks.items():
        _check_mask(mask, fn)
        if k not in params:
            raise ValueError(f"{fn}: the model has no parameter {k!r}")
        if mask.shape != params[k].shape:
            raise ValueError(f"{fn}: the mask for {k} has shape {tuple(mask.shape)}, the "
                             f"weight {tuple(params[k].shape)}")
    out = copy.deepcopy(model)
    new = dict(out.named_parameters())
    with torch.no_grad():
        for k, mask in masks.items():
            new[k].mul_(mask.to(new[k].device))
    return out


# ---------------------------------------------------------------- stored size


def relative_index_encode(
    mask: torch.Tensor, index_bits: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Deep Compression's relative index stream for a mask (read flattened).

    Returns ``(positions, skips)``: the flat position of every stored entry and the number of
    zeros skipped before it since the previous entry, each skip in ``[0, 2**index_bits - 1]``.
    Kept positions are all entries; where a run of pruned positions is too long for
    ``index_bits``, a filler entry (a stored zero value) is placed at every
    ``2**index_bits``-th position of the run. Trailing zeros need no entry.
    """
    fn = "relative_index_encode"
    _check_mask(mask, fn)
    index_bits = check_int_in(index_bits, "index_bits", fn, 1, 16)
    span = 2**index_bits  # an entry covers at most this many positions: skip + itself
    kept = torch.nonzero(mask.reshape(-1).cpu()).reshape(-1)
    if kept.numel() == 0:
        return kept.clone(), kept.clone()
    prev = torch.cat([torch.tensor([-1]), kept[:-1]])
    gaps = kept - prev - 1                      # pruned positions before each kept one
    n_fill = gaps // span                       # fillers needed in each run
    positions = []
    for p0, g, f in zip(prev.tolist(), gaps.tolist(), n_fill.tolist(), strict=True):
        positions.extend(p0 + span * (j + 1) for j in range(f))
        positions.append(p0 + g + 1)
    positions = torch.tensor(positions, dtype=torch.int64)
    prev_pos = torch.cat([torch.tensor([-1]), positions[:-1]])
    skips = positions - prev_pos - 1
    return positions, skips


def relative_index_decode(skips: torch.Tensor, numel: int) -> torch.Tensor:
    """Positions of the stored entries (kept weights and fillers) from their skips."""
    if not isinstance(skips, torch.Tensor) or skips.is_floating_point():
        raise TypeError("relative_index_decode: skips must be an integer tensor")
    positions = torch.cumsum(skips.reshape(-1).to(torch.int64) + 1, 0) - 1
    if positions.numel() and int(positions[-1]) >= numel:
        raise ValueError(f"relative_index_decode: the skips run to position {int(positions[-1])}, "
                         f"past the {numel} positions of the tensor")
    return positions


def _relative_entries(mask: torch.Tensor, index_bits: int) -> int:
    """Number of stored entries (kept + fillers), without building the stream."""
    kept = torch.nonzero(mask.reshape(-1)).reshape(-1)
    if kept.numel() == 0:
        return 0
    prev = torch.cat([kept.new_tensor([-1]), kept[:-1]])
    return int(kept.numel() + ((kept - prev - 1) // 2**index_bits).sum())


def sparse_nbytes(
    mask: torch.Tensor,
    qp: QParams | None = None,
    *,
    fmt: str = "bitmask",
    index_bits: int = 4,
    m: int = 4,
) -> int:
    """Bytes a pruned tensor stores: its kept values plus where they are.

    Values: float32 (``qp=None``) or codes packed at ``qp.bits`` plus ``qp``'s scales (and zero
    points), as ``quantized_nbytes`` counts them. Index, by ``fmt``: ``"bitmask"`` one bit per
    position; ``"relative"`` ``index_bits`` bits per entry, filler entries (with a stored zero
    value) included; ``"nm"`` ``ceil(log2 m)`` bits per kept weight, for a mask with the same
    number of kept weights in every group of ``m`` along the input dimension.
    """
    fn = "sparse_nbytes"
    _check_mask(mask, fn)
    check_choice(fmt, "fmt", SPARSE_FORMATS, fn)
    if qp is not None and not isinstance(qp, QParams):
        raise TypeError(f"{fn}: qp must be QParams or None, got {type(qp).__name__}")
    numel = mask.numel()
    if fmt == "bitmask":
        entries = int(mask.sum())
        index = math.ceil(numel / 8)
    elif fmt == "relative":
        index_bits = check_int_in(index_bits, "index_bits", fn, 1, 16)
        entries = _relative_entries(mask, index_bits)
        index = math.ceil(entries * index_bits / 8)
    else:
        _check_nm(1, m, fn)
        rows = _rows(mask)
        if rows.shape[1] % m:
            raise ValueError(f"{fn}: m={m} does not divide the {rows.shape[1]} inputs per row")
        per_group = rows.reshape(rows.shape[0], -1, m).sum(-1)
        if per_group.numel() and bool((per_group != per_group.reshape(-1)[0]).any()):
            raise ValueError(f"{fn}: not an N:M mask: groups of {m} keep between "
                             f"{int(per_group.min())} and {int(per_group.max())} weights")
        entries = int(mask.sum())
        index = math.ceil(entries * math.ceil(math.log2(m)) / 8) if m > 1 else 0
    values = 4 * entries if qp is None else quantized_nbytes(entries, qp)
    return values + index


def sparse_model_nbytes(
    model: nn.Module,
    masks: dict[str, torch.Tensor] | None = None,
    *,
    bits: int | None = None,
    fmt: str = "bitmask",
    index_bits: int = 4,
    m: int = 4,
) -> int:
    """Bytes a deployed file holds for ``model`` pruned by ``masks`` and quantized to ``bits``.

    Each masked weight is stored sparse (``sparse_nbytes`` with ``fmt``); with ``bits``, its
    kept values are symmetric per-output-channel codes, and every unmasked tensor with two or
    more dimensions is stored dense at ``bits`` (``quantized_nbytes``). Everything else
    (biases, unquantized weights, buffers) counts at its own size.
    """
    fn = "sparse_model_nbytes"
    if not isinstance(model, nn.Module):
        raise TypeError(f"{fn}: expected an nn.Module, got {type(model).__name__}")
    masks = {} if masks is None else masks
    params = dict(model.named_parameters())
    unknown = sorted(set(masks) - set(params))
    if unknown:
        raise ValueError(f"{fn}: masks for parameters the model lacks: {unknown}")
    total = 0
    for k, p in params.items():
        w = p.detach().float()
        qp = None
        if bits is not None and w.ndim >= 2:
            kept = w * masks[k] if k in masks else w
            qp = symmetric_qparams(kept, bits, axis=0)
        if k in masks:
            total += sparse_nbytes(masks[k], qp, fmt=fmt, index_bits=index_bits, m=m)
        elif qp is not None:
            total += quantized_nbytes(w.numel(), qp)
        else:
            total += tensor_nbytes(p)
    return total + sum(tensor_nbytes(b) for b in model.buffers())


# ---------------------------------------------------------------- distillation


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """Knowledge-distillation loss: ``alpha`` soft term plus ``1 - alpha`` hard cross-entropy.

    Soft: ``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch;
    hard: ``cross_entropy(student, targets)``. Logits are ``(N, C)``, targets ``(N,)`` class
    indices; the teacher's logits are detached (no gradient flows into the teacher).
    """
    fn = "distillation_loss"
    check_float_tensor(student_logits, fn)
    check_float_tensor(teacher_logits, fn)
    if student_logits.ndim != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(f"{fn}: student and teacher logits must both be (N, C), got "
                         f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}")
    if not isinstance(targets, torch.Tensor) or targets.is_floating_point() or targets.ndim != 1:
        raise TypeError(f"{fn}: targets must be a 1-D integer tensor of class indices")
    if targets.shape[0] != student_logits.shape[0]:
        raise ValueError(f"{fn}: {targets.shape[0]} targets for {student_logits.shape[0]} rows")
    t = check_real_in(temperature, "temperature", fn, lo=0, lo_open=True)
    check_real_in(alpha, "alpha", fn, lo=0, hi=1)
    log_p_student = torch.log_softmax(student_logits / t, dim=1)
    log_p_teacher = torch.log_softmax(teacher_logits.detach() / t, dim=1)
    soft = torch.nn.functional.kl_div(log_p_student, log_p_teacher, log_target=True,
                                      reduction="batchmean") * t**2
    hard = torch.nn.functional.cross_entropy(student_logits, targets)
    return alpha * soft + (1 - alpha) * hard
