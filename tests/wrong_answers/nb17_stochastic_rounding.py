"""Plausible wrong answers for the checkers of 17_stochastic_rounding.ipynb."""

import math

import torch

# ----------------------------------------------------------------- check_fp16_stall


def _fp16(u):
    return float(torch.tensor(u, dtype=torch.float16))


def _ulp(s):
    return 2.0 ** (math.floor(math.log2(s)) - 10)


def stall_exact_sum(u):
    # simulates correctly but reports n * u, the sum an exact accumulator would hold
    s, n, inc = torch.zeros((), dtype=torch.float16), 0, torch.tensor(u, dtype=torch.float16)
    while bool(s + inc != s):
        s, n = s + inc, n + 1
    return n * _fp16(u), n


def stall_full_ulp(u):
    # stops only when u is below a whole ulp; counts n = P / u
    p = 2.0**-14
    while _ulp(p) <= _fp16(u):
        p *= 2
    return p, round(p / _fp16(u))


def stall_naive_count(u):
    # the right stall value (first power of two whose half ulp reaches u), n = P / u
    p = 2.0**-14
    while _ulp(p) / 2 < _fp16(u):
        p *= 2
    return p, round(p / _fp16(u))


# ----------------------------------------------------------------- check_sr_sum_spread


def spread_worst_case(u, step, n):
    return math.sqrt(n) * step / 2


def spread_linear_in_n(u, step, n):
    p = u / step - math.floor(u / step)
    return n * step * math.sqrt(p * (1 - p))


def spread_no_fraction(u, step, n):
    p = u / step  # assumes u below the spacing
    return float(torch.sqrt(torch.tensor(n * p * (1 - p)))) * step


def spread_in_steps(u, step, n):
    p = u / step - math.floor(u / step)
    return math.sqrt(n * p * (1 - p))


def spread_variance(u, step, n):
    p = u / step - math.floor(u / step)
    return n * p * (1 - p) * step**2


# ----------------------------------------------------------------- check_sr_log2


def _neighbours(x):
    mag = x.abs()
    lo = torch.exp2(torch.floor(torch.log2(mag)))
    return mag, lo, 2 * lo


def log2_interpolate_exponent(x, generator):
    mag, lo, hi = _neighbours(x)
    p = torch.log2(mag / lo)  # in the exponent: biased low
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype)
    return torch.sign(x) * torch.where(u < p, hi, lo)


def log2_nearest(x, generator):
    mag, lo, hi = _neighbours(x)
    return torch.sign(x) * torch.where(mag - lo < hi - mag, lo, hi)


def log2_swapped(x, generator):
    mag, lo, hi = _neighbours(x)
    p = (mag - lo) / (hi - lo)
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype)
    return torch.sign(x) * torch.where(u < 1 - p, hi, lo)


def log2_unsigned(x, generator):
    # forgets the sign
    mag, lo, hi = _neighbours(x)
    p = (mag - lo) / (hi - lo)
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype)
    return torch.where(u < p, hi, lo)


WRONG_ANSWERS = {
    "check_fp16_stall": [
        (stall_exact_sum, "exact sum"),
        (stall_full_ulp, "HALF an ulp"),
        (stall_naive_count, "binade by binade"),
    ],
    "check_sr_sum_spread": [
        (spread_worst_case, "fraction of 1/2"),
        (spread_linear_in_n, "VARIANCES add"),
        (spread_no_fraction, "fractional part"),
        (spread_in_steps, "multiply the spread by step"),
        (spread_variance, "standard deviation"),
    ],
    "check_sr_log2": [
        (log2_interpolate_exponent, "linear in the VALUE"),
        (log2_nearest, "must be random"),
        (log2_swapped, "stay exactly itself"),
        (log2_unsigned, "with the sign of x"),
    ],
}
