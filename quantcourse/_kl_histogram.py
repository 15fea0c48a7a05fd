"""KL divergence between a histogram and its quantized version, for every clipping point.

The calibration search of TensorRT's entropy calibrator, used by
``observers.EntropyObserver`` (introduced in ``05_granularity_and_calibration.ipynb``):
all candidate numbers of kept bins are scored at once from cumulative sums.
"""

from __future__ import annotations

import math

import torch


def kl_divergences(hist: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``KL(P || Q)`` for every candidate number of kept bins ``i`` in ``[levels, len(hist)]``.

    For a candidate ``i``: the reference ``P`` is the first ``i`` bins with every count beyond
    them added to bin ``i - 1`` (clipping); the candidate ``Q`` merges the first ``i``
    (unclipped) bins into ``levels`` groups of ``i // levels`` bins (the last group takes the
    remainder), then spreads each group's count evenly over the bins of the group where ``P``
    is non-zero. Both are normalised. All candidates are evaluated at once from cumulative
    sums, using ``KL = (sum p log p - sum p log q) / sum p + log(sum q / sum p)`` on the raw
    counts; a candidate whose ``Q`` is zero where ``P`` is not gets ``inf``.
    Returns ``(candidates, kl)``, both 1-d.
    """
    h = hist.detach().to(device="cpu", dtype=torch.float64)
    nb = h.numel()
    total = float(h.sum())
    zero = h.new_zeros(1)
    cs = torch.cat([zero, h.cumsum(0)])  # cs[k] = sum of h[:k]
    nzc = torch.cat([zero, (h > 0).double().cumsum(0)])

    def xlogx(v: torch.Tensor) -> torch.Tensor:
        return torch.where(v > 0, v * torch.log(torch.where(v > 0, v, 1.0)), 0.0)

    cpl = torch.cat([zero, xlogx(h).cumsum(0)])
    i = torch.arange(levels, nb + 1)  # candidate numbers of kept bins, (K,)
    m = (i // levels)[:, None]
    starts = torch.arange(levels)[None, :] * m  # (K, levels)
    ends = starts + m
    ends[:, -1] = i
    q = cs[ends] - cs[starts]  # counts of each quantization level
    outliers = total - cs[i]
    last = h[i - 1]
    norm = nzc[ends] - nzc[starts]  # non-zero bins of P per group
    norm[:, -1] += ((last == 0) & (outliers > 0)).double()
    psum = q.clone()
    psum[:, -1] += outliers  # P's mass per group (clipped counts land in the last bin)
    sum_plogp = cpl[i - 1] + xlogx(last + outliers)
    has_p = psum > 0
    ok = has_p & (q > 0)
    safe_q = torch.where(ok, q / norm.clamp(min=1), 1.0)
    sum_plogq = torch.where(ok, psum * torch.log(safe_q), 0.0).sum(1)
    kl = (sum_plogp - sum_plogq) / total + torch.log(cs[i] / total)
    kl = torch.where((has_p & ~ok).any(1), math.inf, kl)
    return i, kl


def kl_best_bins(hist: torch.Tensor, levels: int) -> int:
    """The number of leading bins with the smallest ``KL(P || Q)`` (the fewest on ties)."""
    i, kl = kl_divergences(hist, levels)
    return int(i[int(torch.argmin(kl))])
