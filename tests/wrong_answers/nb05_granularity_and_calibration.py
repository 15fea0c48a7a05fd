"""Plausible wrong answers for the checkers of 05_granularity_and_calibration.ipynb."""

import torch

import quantcourse as qc

_EPS = torch.finfo(torch.float32).eps

# ----------------------------------------------------------------- check_per_channel_scales


def scales_per_input_channel(w, bits):
    # reduces over the wrong dimension: one scale per input column
    return torch.clamp(w.abs().amax(dim=0) / (2 ** (bits - 1) - 1), min=_EPS)


def scales_per_input_channel_square_only(w, bits):
    # the same mistake, reshaped to pass the shape test on non-square weights
    s = torch.clamp(w.abs().amax(dim=0) / (2 ** (bits - 1) - 1), min=_EPS)
    if w.shape[0] != w.shape[1]:
        return torch.clamp(w.abs().amax(dim=1) / (2 ** (bits - 1) - 1), min=_EPS)
    return s


def scales_per_tensor_broadcast(w, bits):
    s = torch.clamp(w.abs().max() / (2 ** (bits - 1) - 1), min=_EPS)
    return s.expand(w.shape[0]).clone()


def scales_no_eps(w, bits):
    # a pruned (all-zero) row gets a scale of 0
    return w.abs().amax(dim=1) / (2 ** (bits - 1) - 1)


def scales_keepdim(w, bits):
    return torch.clamp(w.abs().amax(dim=1, keepdim=True) / (2 ** (bits - 1) - 1), min=_EPS)


def scales_max_not_abs(w, bits):
    return torch.clamp(w.amax(dim=1) / (2 ** (bits - 1) - 1), min=_EPS)


def scales_full_levels(w, bits):
    return torch.clamp(w.abs().amax(dim=1) / 2 ** (bits - 1), min=_EPS)


def scales_single_number(w, bits):
    return float(w.abs().max()) / (2 ** (bits - 1) - 1)


# ----------------------------------------------------------------- check_percentile_range


def percentile_of_x(x, percentile):
    # forgets the absolute value: misses negative outliers
    return torch.quantile(x.flatten(), percentile / 100)


def percentile_in_percent(x, percentile):
    # passes 99.9 where torch.quantile wants 0.999
    return torch.quantile(x.abs().flatten(), percentile)


def percentile_nearest_rank(x, percentile):
    a = x.abs().flatten().sort().values
    k = max(1, min(a.numel(), int(-(-percentile / 100 * a.numel() // 1))))
    return a[k - 1]


def percentile_fraction_of_max(x, percentile):
    return x.abs().max() * percentile / 100


# ----------------------------------------------------------------- check_clipping_split


def _parts(x, qp):
    x_hat = qc.fake_quantize(x, qp)
    code = torch.round(x / qp.scale) + qp.zero_point
    outside = (code < qp.qmin) | (code > qp.qmax)
    return ((x - x_hat).double() ** 2), outside


def split_means_within_parts(x, qp):
    # the mean over each part: the two no longer add up to the total MSE
    err2, outside = _parts(x, qp)
    clip = float(err2[outside].mean()) if bool(outside.any()) else 0.0
    return clip, float(err2[~outside].mean())


def split_swapped(x, qp):
    err2, outside = _parts(x, qp)
    n = x.numel()
    return float(err2[~outside].sum()) / n, float(err2[outside].sum()) / n


def split_without_zero_point(x, qp):
    # compares round(x / s) with [qmin, qmax], forgetting z: wrong for asymmetric grids
    x_hat = qc.fake_quantize(x, qp)
    code = torch.round(x / qp.scale)
    outside = (code < qp.qmin) | (code > qp.qmax)
    err2 = (x - x_hat).double() ** 2
    n = x.numel()
    return float(err2[outside].sum()) / n, float(err2[~outside].sum()) / n


def split_at_grid_ends(x, qp):
    # everything beyond the last level counts as clipped, even within half a step of it
    x_hat = qc.fake_quantize(x, qp)
    lo = qp.scale * (qp.qmin - qp.zero_point)
    hi = qp.scale * (qp.qmax - qp.zero_point)
    outside = (x < lo) | (x > hi)
    err2 = (x - x_hat).double() ** 2
    n = x.numel()
    return float(err2[outside].sum()) / n, float(err2[~outside].sum()) / n


def split_total_only(x, qp):
    # everything counted as rounding error
    x_hat = qc.fake_quantize(x, qp)
    return 0.0, float(((x - x_hat).double() ** 2).mean())


WRONG_ANSWERS = {
    "check_per_channel_scales": [
        (scales_per_input_channel, "input column"),
        (scales_per_input_channel_square_only, "axis 0"),
        (scales_per_tensor_broadcast, "per-tensor"),
        (scales_no_eps, "eps"),
        (scales_keepdim, "1-D tensor"),
        (scales_max_not_abs, "largest magnitude"),
        (scales_full_levels, "2^(b-1) - 1"),
        (scales_single_number, "per-tensor"),
    ],
    "check_percentile_range": [
        (percentile_of_x, "|x|"),
        (percentile_in_percent, "percentile / 100"),
        (percentile_nearest_rank, "interpolate"),
        (percentile_fraction_of_max, "not p % of max|x|"),
    ],
    "check_clipping_split": [
        (split_means_within_parts, "x.numel()"),
        (split_swapped, "in that order"),
        (split_without_zero_point, "zero point"),
        (split_at_grid_ends, "half a step"),
        (split_total_only, "split is not"),
    ],
}
