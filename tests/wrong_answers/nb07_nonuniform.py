"""Plausible wrong answers for the checkers of 07_nonuniform.ipynb."""

import math

import torch

# ----------------------------------------------------------------- check_nf_levels


def _quantiles(half_pos, half_neg, p_max):
    pos = torch.special.ndtri(torch.linspace(0.5, p_max, half_pos + 1, dtype=torch.float64)[1:])
    neg = -torch.special.ndtri(torch.linspace(0.5, p_max, half_neg + 1, dtype=torch.float64)[1:])
    return pos, neg


def nf_fixed_offset(bits):
    # copies the 4-bit outermost probability to every width
    n = 2**bits
    pos, neg = _quantiles(n // 2, n // 2 - 1, 1 - (1 / 30 + 1 / 32) / 2)
    return torch.sort(torch.cat([neg, torch.zeros(1, dtype=torch.float64), pos]) / pos.max()).values


def nf_symmetric_halves(bits):
    # the same number of levels on both sides, no exact zero
    n = 2**bits
    p_max = 1 - (1 / (2 * (n - 1)) + 1 / (2 * n)) / 2
    q = torch.special.ndtri(torch.linspace(1 - p_max, p_max, n, dtype=torch.float64))
    return q / q.max()


def nf_not_normalized(bits):
    n = 2**bits
    p_max = 1 - (1 / (2 * (n - 1)) + 1 / (2 * n)) / 2
    pos, neg = _quantiles(n // 2, n // 2 - 1, p_max)
    return torch.sort(torch.cat([neg, torch.zeros(1, dtype=torch.float64), pos])).values


def nf_one_level_short(bits):
    # 2^(b-1) - 1 levels on each side plus zero: 2^b - 1 levels
    n = 2**bits
    p_max = 1 - (1 / (2 * (n - 1)) + 1 / (2 * n)) / 2
    pos, neg = _quantiles(n // 2 - 1, n // 2 - 1, p_max)
    return torch.sort(torch.cat([neg, torch.zeros(1, dtype=torch.float64), pos]) / pos.max()).values


# ----------------------------------------------------------------- check_log_zero_threshold


def _k(bits):
    return 2 ** (bits - 1) - 1


def zero_at_smallest_level(bits, frac_bits):
    return 2 ** (-(_k(bits) - 1) / 2**frac_bits)


def zero_geometric_midpoint(bits, frac_bits):
    smallest = 2 ** (-(_k(bits) - 1) / 2**frac_bits)
    return smallest / math.sqrt(2 ** (1 / 2**frac_bits))


def zero_k_steps(bits, frac_bits):
    return 2 ** (-_k(bits) / 2**frac_bits) / 2


def zero_ignores_frac_bits(bits, frac_bits):
    return 2.0 ** -(_k(bits) - 1) / 2


# ----------------------------------------------------------------- check_centroid_grad


def grad_mean_not_sum(grad, codes, k):
    sums = torch.zeros(grad.shape[0], k).scatter_add_(1, codes.long(), grad)
    counts = torch.zeros(grad.shape[0], k).scatter_add_(1, codes.long(), torch.ones_like(grad))
    return sums / counts.clamp(min=1)


def grad_pooled_over_rows(grad, codes, k):
    sums = torch.zeros(k).index_add_(0, codes.reshape(-1).long(), grad.reshape(-1))
    return sums.expand(grad.shape[0], k).clone()


def grad_one_codebook(grad, codes, k):
    return torch.zeros(k).index_add_(0, codes.reshape(-1).long(), grad.reshape(-1))


WRONG_ANSWERS = {
    "check_nf_levels": [
        (nf_fixed_offset, "depends on the bit width"),
        (nf_symmetric_halves, "exact 0"),
        (nf_not_normalized, "exactly 1"),
        (nf_one_level_short, "2^(b-1) positive"),
    ],
    "check_log_zero_threshold": [
        (zero_at_smallest_level, "halfway"),
        (zero_geometric_midpoint, "not in exponent"),
        (zero_k_steps, "K - 1 steps"),
        (zero_ignores_frac_bits, "exponent steps are 1/2^f"),
    ],
    "check_centroid_grad": [
        (grad_mean_not_sum, "do not average"),
        (grad_pooled_over_rows, "its own codebook"),
        (grad_one_codebook, "shape (rows, k)"),
    ],
}
