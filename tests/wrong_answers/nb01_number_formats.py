"""Plausible wrong answers for the checkers of 01_number_formats.ipynb."""

import math

import torch

import quantcourse as qc

# ----------------------------------------------------------------- check_float_thresholds


def thresholds_max_value(exponent_bits, mantissa_bits):  # overflow at the largest number
    bias = 2 ** (exponent_bits - 1) - 1
    return (2 - 2.0**-mantissa_bits) * 2.0**bias, 2.0 ** (-bias - mantissa_bits)


def thresholds_next_power(exponent_bits, mantissa_bits):  # overflow at 2^(bias+1)
    bias = 2 ** (exponent_bits - 1) - 1
    return 2.0 ** (bias + 1), 2.0 ** (-bias - mantissa_bits)


def thresholds_smallest_subnormal(exponent_bits, mantissa_bits):  # zero below the subnormal
    bias = 2 ** (exponent_bits - 1) - 1
    return (2 - 2.0 ** -(mantissa_bits + 1)) * 2.0**bias, 2.0 ** (1 - bias - mantissa_bits)


def thresholds_no_subnormals(exponent_bits, mantissa_bits):  # flush below the smallest normal
    bias = 2 ** (exponent_bits - 1) - 1
    return (2 - 2.0 ** -(mantissa_bits + 1)) * 2.0**bias, 2.0 ** (1 - bias)


def thresholds_bias_off_by_one(exponent_bits, mantissa_bits):
    bias = 2 ** (exponent_bits - 1)
    return (2 - 2.0 ** -(mantissa_bits + 1)) * 2.0**bias, 2.0 ** (-bias - mantissa_bits)


def thresholds_one_number(exponent_bits, mantissa_bits):  # returns only the overflow
    bias = 2 ** (exponent_bits - 1) - 1
    return (2 - 2.0 ** -(mantissa_bits + 1)) * 2.0**bias


# ----------------------------------------------------------------- check_q_format


def _err(x, m, n):
    q = torch.clamp(torch.round(x.double() * 2.0**n), -(2.0 ** (m + n)), 2.0 ** (m + n) - 1)
    return float((q * 2.0**-n - x.double()).abs().max())


def q_full_step(x, max_error):  # asks the whole step to be within max_error
    for total in range(1, 33):
        for n in range(total - 1, -1, -1):
            if 2.0**-n <= max_error and _err(x, total - 1 - n, n) <= max_error:
                return total - 1 - n, n


def q_closed_form(x, max_error):  # n from the half step, m from max|x|: ignores saturation
    n = max(0, math.ceil(-math.log2(2 * max_error)))
    m = max(0, math.ceil(math.log2(float(x.abs().max()))))
    if float(x.max()) > 2.0**m - 2.0**-n:
        m += 1
    return m, n


def q_ignores_top(x, max_error):  # treats the range as [-2^m, 2^m]
    n = max(0, math.ceil(-math.log2(2 * max_error)))
    return max(0, math.ceil(math.log2(float(x.abs().max())))), n


def q_fewest_fraction_bits(x, max_error):  # at equal width, keeps the most integer bits
    for total in range(1, 33):
        for n in range(total):
            if _err(x, total - 1 - n, n) <= max_error:
                return total - 1 - n, n


# ----------------------------------------------------------------- check_change_q_format


def _sat(y, m_out, n_out):
    return torch.clamp(y, -(2 ** (m_out + n_out)), 2 ** (m_out + n_out) - 1)


def change_floor_shift(q, n_in, m_out, n_out):  # a plain arithmetic shift
    q = q.long()
    y = q >> (n_in - n_out) if n_in >= n_out else q << (n_out - n_in)
    return _sat(y, m_out, n_out)


def change_half_up(q, n_in, m_out, n_out):  # adds half, then shifts: ties go up
    q = q.long()
    k = n_in - n_out
    y = (q + (1 << (k - 1))) >> k if k > 0 else q << -k
    return _sat(y, m_out, n_out)


def change_half_away(q, n_in, m_out, n_out):  # C's round(): ties away from zero
    y = q.double() * 2.0 ** (n_out - n_in)
    return _sat(torch.sign(y) * torch.floor(y.abs() + 0.5), m_out, n_out)


def change_no_saturation(q, n_in, m_out, n_out):
    return torch.round(q.double() * 2.0 ** (n_out - n_in))


def change_returns_reals(q, n_in, m_out, n_out):  # the value, not the code
    return qc.from_fixed(qc.to_fixed(q.double() * 2.0**-n_in, m_out, n_out), m_out, n_out)


WRONG_ANSWERS = {
    "check_float_thresholds": [
        (thresholds_max_value, "midpoint"),
        (thresholds_next_power, "round DOWN"),
        (thresholds_smallest_subnormal, "HALF the smallest subnormal"),
        (thresholds_no_subnormals, "HALF the smallest subnormal"),
        (thresholds_bias_off_by_one, "not 2^(e-1)"),
        (thresholds_one_number, "expected a pair"),
    ],
    "check_q_format": [
        (q_full_step, "HALF a step"),
        (q_closed_form, "saturates, by less than max_error"),
        (q_ignores_top, "saturate"),
        (q_fewest_fraction_bits, "most fraction bits"),
    ],
    "check_change_q_format": [
        (change_floor_shift, "rounds DOWN"),
        (change_half_up, "ties go to the even"),
        (change_half_away, "not away from zero"),
        (change_no_saturation, "saturate"),
        (change_returns_reals, "whole numbers"),
    ],
}
