"""Plausible wrong answers for the checkers of 01_number_formats.ipynb."""

import torch

# ----------------------------------------------------------------- check_float_value


def float_no_bias(sign, exponent, mantissa, exponent_bits, mantissa_bits):
    # uses the stored (biased) exponent as the power of two
    return (-1) ** sign * 2.0**exponent * (1 + mantissa / 2**mantissa_bits)


def float_no_implicit_one(sign, exponent, mantissa, exponent_bits, mantissa_bits):
    # reads the significand as 0.mmm instead of 1.mmm
    bias = 2 ** (exponent_bits - 1) - 1
    return (-1) ** sign * 2.0 ** (exponent - bias) * (mantissa / 2**mantissa_bits)


def float_bias_off_by_one(sign, exponent, mantissa, exponent_bits, mantissa_bits):
    # bias 2^(e-1) instead of 2^(e-1) - 1
    bias = 2 ** (exponent_bits - 1)
    return (-1) ** sign * 2.0 ** (exponent - bias) * (1 + mantissa / 2**mantissa_bits)


def float_ignores_sign(sign, exponent, mantissa, exponent_bits, mantissa_bits):
    bias = 2 ** (exponent_bits - 1) - 1
    return 2.0 ** (exponent - bias) * (1 + mantissa / 2**mantissa_bits)


def float_mantissa_not_scaled(sign, exponent, mantissa, exponent_bits, mantissa_bits):
    # adds the raw mantissa integer instead of mantissa / 2^M
    bias = 2 ** (exponent_bits - 1) - 1
    return (-1) ** sign * 2.0 ** (exponent - bias) * (1 + mantissa)


def float_returns_string(sign, exponent, mantissa, exponent_bits, mantissa_bits):
    return f"{sign}|{exponent}|{mantissa}"


# ----------------------------------------------------------------- check_to_fixed


def fixed_truncates(x, int_bits, frac_bits):
    n = int_bits + frac_bits
    return torch.clamp(torch.trunc(x * 2**frac_bits), -(2**n), 2**n - 1).to(torch.int32)


def fixed_floor(x, int_bits, frac_bits):
    n = int_bits + frac_bits
    return torch.clamp(torch.floor(x * 2**frac_bits), -(2**n), 2**n - 1).to(torch.int32)


def fixed_half_away(x, int_bits, frac_bits):
    # Python-school rounding: halves away from zero
    n = int_bits + frac_bits
    y = x * 2**frac_bits
    q = torch.sign(y) * torch.floor(y.abs() + 0.5)
    return torch.clamp(q, -(2**n), 2**n - 1).to(torch.int32)


def fixed_no_saturation(x, int_bits, frac_bits):
    return torch.round(x * 2**frac_bits).to(torch.int32)


def fixed_narrow_range(x, int_bits, frac_bits):
    n = int_bits + frac_bits
    return torch.clamp(torch.round(x * 2**frac_bits), -(2**n - 1), 2**n - 1).to(torch.int32)


def fixed_scale_inverted(x, int_bits, frac_bits):
    n = int_bits + frac_bits
    return torch.clamp(torch.round(x * 2.0**-frac_bits), -(2**n), 2**n - 1).to(torch.int32)


def fixed_returns_reals(x, int_bits, frac_bits):
    # returns the represented value q * 2^-n instead of the integer code
    n = int_bits + frac_bits
    q = torch.clamp(torch.round(x * 2**frac_bits), -(2**n), 2**n - 1)
    return q * 2.0**-frac_bits


WRONG_ANSWERS = {
    "check_float_value": [
        (float_no_bias, "bias"),
        (float_no_implicit_one, "implicit leading 1"),
        (float_bias_off_by_one, "not 2^(exponent_bits - 1)"),
        (float_ignores_sign, "sign"),
        (float_mantissa_not_scaled, "divide it by 2^mantissa_bits"),
        (float_returns_string, "expected a tensor or a number"),
    ],
    "check_to_fixed": [
        (fixed_truncates, "truncate"),
        (fixed_floor, "floor"),
        (fixed_half_away, "round to even"),
        (fixed_no_saturation, "saturate"),
        (fixed_narrow_range, "-2^(m+n), not"),
        (fixed_scale_inverted, "multiply by 2^frac_bits"),
        (fixed_returns_reals, "expected integers"),
    ],
}
