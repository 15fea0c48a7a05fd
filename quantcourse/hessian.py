"""Second-order quantization: Hutchinson's Hessian trace (HAWQ) and GPTQ.

Introduced in ``16_second_order.ipynb``.

* ``hutchinson_trace(loss, params)``: the trace of the Hessian of a scalar loss with respect to
  each tensor in ``params``, estimated as the mean of ``v^T H v`` over Rademacher vectors ``v``
  (entries +-1), each ``H v`` a Hessian-vector product through autograd (a second backward
  pass; the Hessian itself is never formed). Stops when the running mean of every tensor moves
  by less than ``rtol`` (relative) from one sample to the next, or after ``max_iter`` samples.
  Seeded: the same seed gives the same vectors.
* ``hawq_sensitivity(model, loss)``: HAWQ's per-layer sensitivity, the Hessian trace of each
  layer's weight divided by its number of parameters (the average curvature of the loss along
  that layer's weights), estimated jointly for all layers from one sequence of Hessian-vector
  products.
* ``gptq_hessian(inputs)``: ``H = 2 X^T X`` over calibration inputs of shape
  ``(..., in_features)`` (accumulated in float64): the Hessian of the layer-output error
  ``||W X^T - W_hat X^T||^2`` with respect to each row of the weight.
* ``gptq(weight, hessian, bits)``: GPTQ (Frantar et al., 2023) for one linear layer: rounds the
  weight column by column onto a symmetric grid and, after each column, spreads its rounding
  error onto the columns not yet quantized so that the layer output on the calibration data
  changes as little as possible. Returns the quantized-then-dequantized weight and its QParams.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch
from torch import nn

from ._validate import check_bits, check_float_tensor, check_int_in, check_real_in
from .affine import QParams, qrange, symmetric_qparams

__all__ = ["TraceEstimate", "hutchinson_trace", "hawq_sensitivity", "gptq_hessian", "gptq"]


# ---------------------------------------------------------------- Hutchinson's trace estimator


class TraceEstimate(NamedTuple):
    """Hutchinson's estimate: ``trace`` (float64, one per tensor), the number of Rademacher
    samples used, and the samples themselves ``(iterations, n_tensors)`` (their spread gives
    the standard error ``samples.std(0) / sqrt(iterations)``)."""

    trace: torch.Tensor
    iterations: int
    samples: torch.Tensor


def hutchinson_trace(
    loss: torch.Tensor,
    params: torch.Tensor | Sequence[torch.Tensor],
    *,
    max_iter: int = 200,
    min_iter: int = 10,
    rtol: float = 1e-3,
    seed: int = 0,
) -> TraceEstimate:
    """Estimate ``trace(d^2 loss / d p^2)`` for each tensor ``p`` in ``params``.

    ``loss`` is a scalar tensor still attached to its autograd graph, computed from
    ``params`` (which require grad). Each iteration draws one Rademacher vector per tensor
    (from a ``torch.Generator`` seeded with ``seed``), computes all Hessian-vector products
    with one second backward pass and adds ``v^T H v`` to each tensor's running mean. After
    ``min_iter`` samples it stops as soon as no running mean changed by more than ``rtol``
    relative to its value; at most ``max_iter`` samples. The estimate is unbiased for each
    block; its variance is ``2 * sum_{i != j} H_ij^2`` per sample.
    """
    fn = "hutchinson_trace"
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        got = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(f"{fn}: loss must be a scalar tensor, got {got}")
    if not loss.requires_grad:
        raise ValueError(f"{fn}: loss is not attached to an autograd graph (computed under "
                         "no_grad, or from tensors that do not require grad)")
    if not bool(torch.isfinite(loss.detach()).all()):
        raise ValueError(f"{fn}: the loss is not finite ({float(loss)})")
    params = [params] if isinstance(params, torch.Tensor) else list(params)
    if not params:
        raise ValueError(f"{fn}: params is empty")
    for i, p in enumerate(params):
        check_float_tensor(p, fn)
        if not p.requires_grad:
            raise ValueError(f"{fn}: params[{i}] does not require grad")
    check_int_in(max_iter, "max_iter", fn)
    check_int_in(min_iter, "min_iter", fn)
    if min_iter > max_iter:
        raise ValueError(f"{fn}: min_iter ({min_iter}) is above max_iter ({max_iter})")
    check_real_in(rtol, "rtol", fn, lo=0)

    grads = torch.autograd.grad(loss, params, create_graph=True)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    samples: list[torch.Tensor] = []
    mean = torch.zeros(len(params), dtype=torch.float64)
    for it in range(1, max_iter + 1):
        vs = [
            (torch.randint(0, 2, p.shape, generator=gen, dtype=torch.int8) * 2 - 1).to(
                device=p.device, dtype=p.dtype)
            for p in params
        ]
        hvs = torch.autograd.grad(grads, params, grad_outputs=vs, retain_graph=True,
                                  allow_unused=True)
        sample = torch.tensor(
            [0.0 if hv is None else float((hv.double() * v.double()).sum())
             for hv, v in zip(hvs, vs, strict=True)], dtype=torch.float64)
        samples.append(sample)
        new_mean = mean + (sample - mean) / it
        change = (new_mean - mean).abs() / new_mean.abs().clamp_min(1e-12)
        mean = new_mean
        if it >= min_iter and bool((change <= rtol).all()):
            break
    return TraceEstimate(mean, len(samples), torch.stack(samples))


_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def hawq_sensitivity(
    model: nn.Module,
    loss: torch.Tensor,
    *,
    layers: Iterable[str] | None = None,
    **kwargs,
) -> dict[str, dict[str, float]]:
    """HAWQ's sensitivity of each layer: ``trace(H_layer) / parameters``.

    ``loss`` is a scalar computed from ``model`` with autograd on. ``layers`` names the modules
    to measure (default: every ``Linear`` and ``Conv`` layer, in ``named_modules`` order); each
    layer's block is its ``weight``. Keyword arguments go to ``hutchinson_trace``. Returns
    ``{name: {"trace", "params", "sensitivity", "iterations"}}``.
    """
    fn = "hawq_sensitivity"
    if not isinstance(model, nn.Module):
        raise TypeError(f"{fn}: model must be an nn.Module, got {type(model).__name__}")
    modules = dict(model.named_modules())
    if layers is None:
        names = [n for n, m in modules.items() if isinstance(m, _WEIGHTED)]
    else:
        names = list(layers)
        missing = [n for n in names if n not in modules]
        if missing:
            raise ValueError(f"{fn}: the model has no layer(s) {missing}")
    bad = [n for n in names if not isinstance(getattr(modules[n], "weight", None), torch.Tensor)]
    if bad or not names:
        raise ValueError(f"{fn}: layers without a weight tensor: {bad}" if bad
                         else f"{fn}: the model has no Linear or Conv layer")
    weights = [modules[n].weight for n in names]
    est = hutchinson_trace(loss, weights, **kwargs)
    return {
        n: {"trace": float(t), "params": w.numel(), "sensitivity": float(t) / w.numel(),
            "iterations": est.iterations}
        for n, w, t in zip(names, weights, est.trace, strict=True)
    }


# ---------------------------------------------------------------- GPTQ


def gptq_hessian(inputs: torch.Tensor | Iterable[torch.Tensor]) -> torch.Tensor:
    """``H = 2 X^T X`` (float64, ``(in_features, in_features)``) from calibration inputs.

    ``inputs`` is a tensor of shape ``(..., in_features)`` (every leading index is one input
    row: batch, tokens) or an iterable of such tensors (calibration batches), summed in float64.
    This is the Hessian of ``||(W - W_hat) X^T||^2`` with respect to each row of ``W``; GPTQ's
    result does not depend on its overall scale (the dampening is relative).
    """
    fn = "gptq_hessian"
    batches = [inputs] if isinstance(inputs, torch.Tensor) else list(inputs)
    if not batches:
        raise ValueError(f"{fn}: no calibration inputs")
    width = None
    for i, x in enumerate(batches):
        check_float_tensor(x, fn)
        if x.ndim < 1 or x.shape[-1] == 0:
            raise ValueError(
                f"{fn}: inputs must have shape (..., in_features), got {tuple(x.shape)}")
        if width is not None and x.shape[-1] != width:
            raise ValueError(f"{fn}: batch {i} has {x.shape[-1]} features, the first {width}")
        width = x.shape[-1]
        _check_finite(x, fn, f"calibration batch {i}")
    h = torch.zeros(width, width, dtype=torch.float64, device=batches[0].device)
    for x in batches:
        xs = x.detach().reshape(-1, width).double()
        h.addmm_(xs.T, xs, alpha=2.0)
    return h


def _check_finite(t: torch.Tensor, fn: str, what: str) -> None:
    finite = torch.isfinite(t)
    if not bool(finite.all()):
        raise ValueError(f"{fn}: {what} holds {int((~finite).sum())} NaN or infinite value(s) "
                         f"out of {t.numel()}")


def gptq(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    bits: int,
    *,
    group_size: int | None = None,
    block_size: int = 128,
    percdamp: float = 0.01,
    act_order: bool = False,
) -> tuple[torch.Tensor, QParams]:
    """Quantize a linear layer's ``weight`` ``(out, in)`` with GPTQ; return ``(w_hat, qp)``.

    ``hessian`` is ``(in, in)`` and symmetric, e.g. ``gptq_hessian(calibration_inputs)`` (only
    its lower triangle and diagonal are read). The grid is
    symmetric (narrow range, ``z = 0``) per output channel, or per group of ``group_size``
    consecutive input columns. ``w_hat`` (same shape and dtype as ``weight``) lies on that grid:
    ``dequantize(quantize(w_hat, qp), qp) == w_hat``.

    The steps, as in the paper and its reference code: columns whose Hessian diagonal is 0
    (inputs always 0) are set to 0; with ``act_order`` the columns are processed in order of
    decreasing Hessian diagonal (and put back at the end); ``percdamp`` times the mean diagonal
    is added to the diagonal; the upper Cholesky factor ``U`` of ``H^-1`` (computed in float64)
    drives the updates. Column ``j`` is rounded to nearest, its error divided by ``U_jj`` and
    subtracted, times row ``j`` of ``U``, from the columns after it: at once inside the current
    block of ``block_size`` columns, lazily (one matrix product) for the columns after the
    block. A group's scale is computed when the first of its columns is reached, from the
    current (error-updated) values of all its columns; for groups that start a block (e.g.
    ``group_size`` dividing ``block_size``) this is what the reference code does, and with
    ``act_order`` the groups stay the contiguous column groups of ``qp``. Per-channel scales
    come from the weight before any update. The weights are updated in float32.
    """
    fn = "gptq"
    check_float_tensor(weight, fn)
    check_float_tensor(hessian, fn)
    check_bits(bits, 2, 16, fn)
    if weight.ndim != 2:
        raise ValueError(f"{fn}: weight must be 2-D (out_features, in_features), got "
                         f"{tuple(weight.shape)}")
    rows, cols = weight.shape
    if hessian.ndim != 2 or hessian.shape[0] != hessian.shape[1]:
        raise ValueError(f"{fn}: the Hessian must be a square matrix, got {tuple(hessian.shape)}")
    if hessian.shape[0] != cols:
        raise ValueError(f"{fn}: the Hessian is {tuple(hessian.shape)} but the weight has {cols} "
                         f"input columns: it needs ({cols}, {cols})")
    if group_size is not None:
        check_int_in(group_size, "group_size", fn)
    check_int_in(block_size, "block_size", fn)
    if group_size is not None and cols % group_size:
        raise ValueError(f"{fn}: group_size {group_size} does not divide the {cols} input columns")
    check_real_in(percdamp, "percdamp", fn, lo=0)
    for name, t in (("weight", weight), ("hessian", hessian)):
        _check_finite(t, fn, f"the {name}")
    if weight.numel() == 0:
        qp = symmetric_qparams(weight.detach().float(), bits, axis=0, group_size=None) \
            if group_size is None else symmetric_qparams(weight.detach().float(), bits,
                                                         group_size=group_size)
        return weight.detach().clone(), qp

    dev = weight.device
    w = weight.detach().to(torch.float32).clone()
    h = hessian.detach().to(device=dev, dtype=torch.float64).clone()
    diag = torch.diagonal(h)
    if bool((diag < 0).any()):
        raise ValueError(f"{fn}: the Hessian has negative diagonal entries: not a Hessian of a "
                         "squared error")
    dead = diag == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    qmin, qmax = qrange(bits, signed=True, narrow_range=True)

    perm = torch.argsort(torch.diagonal(h), descending=True, stable=True) if act_order \
        else torch.arange(cols, device=dev)
    w = w[:, perm]
    h = h[perm][:, perm]
    damp = percdamp * float(torch.diagonal(h).mean())
    h.diagonal().add_(damp)
    chol, info = torch.linalg.cholesky_ex(h)
    if int(info):
        raise ValueError(f"{fn}: the dampened Hessian is not positive definite; raise percdamp "
                         f"(now {percdamp}) or calibrate on more inputs")
    # H^-1 = L^-T L^-1 (torch.cholesky_inverse is much slower on CPU), then its upper factor
    l_inv = torch.linalg.solve_triangular(chol, torch.eye(cols, dtype=h.dtype, device=dev),
                                          upper=False)
    u = torch.linalg.cholesky(l_inv.T @ l_inv, upper=True).to(torch.float32)

    if group_size is None:
        scale_pc = symmetric_qparams(weight.detach().float() * (~dead).float(), bits,
                                     axis=0).scale.to(dev)
        n_groups = 0
    else:
        n_groups = cols // group_size
        group_scale = torch.empty(rows, n_groups, dtype=torch.float32, device=dev)
        done = torch.zeros(n_groups, dtype=torch.bool)
        inv_perm = torch.argsort(perm)
        group_of = perm // group_size                     # group of each processed column
    # Work on the transpose: column j of the weight is the contiguous row wt[j].
    wt = w.T.contiguous()
    w_hat = torch.empty_like(wt)
    for b0 in range(0, cols, block_size):
        b1 = min(b0 + block_size, cols)
        w1 = wt[b0:b1].clone()
        err = torch.empty_like(w1)
        u1 = u[b0:b1, b0:b1]
        for i in range(b1 - b0):
            j = b0 + i
            if group_size is None:
                s = scale_pc
            else:
                g = int(group_of[j])
                if not bool(done[g]):
                    pos = inv_perm[g * group_size:(g + 1) * group_size]   # processed positions
                    cur = torch.empty(group_size, rows, dtype=torch.float32, device=dev)
                    inside = pos < b1
                    cur[inside] = w1[pos[inside] - b0]
                    if bool((~inside).any()):
                        later = pos[~inside]
                        cur[~inside] = wt[later] - u[b0:j, later].T @ err[:i]
                    group_scale[:, g] = symmetric_qparams(cur, bits, axis=1).scale
                    done[g] = True
                s = group_scale[:, g]
            col = w1[i]
            q = torch.clamp(torch.round(col * torch.reciprocal(s)), qmin, qmax) * s
            w_hat[j] = q
            e = (col - q) / u1[i, i]
            w1[i:] -= u1[i, i:, None] * e
            err[i] = e
        wt[b1:] -= u[b0:b1, b1:].T @ err

    w_hat = w_hat.T[:, torch.argsort(perm)]
    zeros = torch.zeros(rows, dtype=torch.int32, device=dev)
    if group_size is None:
        qp = QParams(scale_pc, zeros, qmin, qmax, axis=0)
    else:
        qp = QParams(group_scale, torch.zeros(rows, n_groups, dtype=torch.int32, device=dev),
                     qmin, qmax, group_size=group_size)
    return w_hat.to(weight.dtype), qp
