"""Plausible wrong answers for the checkers of 03_symmetric.ipynb."""

import torch

import quantcourse as qc

# ----------------------------------------------------------------- check_symmetric_scale


def scale_full_levels(x, bits):
    # divides by 2^(b-1) instead of 2^(b-1) - 1
    return torch.clamp(x.abs().max() / 2 ** (bits - 1), min=torch.finfo(torch.float32).eps)


def scale_full_range(x, bits):
    # PyTorch's full-range observer: max|x| / 127.5 at 8 bits
    return torch.clamp(x.abs().max() / (2 ** (bits - 1) - 0.5), min=torch.finfo(torch.float32).eps)


def scale_no_eps(x, bits):
    # the textbook formula: 0 on an all-zero tensor, so x / s is NaN
    return x.abs().max() / (2 ** (bits - 1) - 1)


def scale_max_not_abs(x, bits):
    # largest value instead of largest magnitude
    return torch.clamp(x.max() / (2 ** (bits - 1) - 1), min=torch.finfo(torch.float32).eps)


def scale_unsigned_levels(x, bits):
    return torch.clamp(x.abs().max() / (2**bits - 1), min=torch.finfo(torch.float32).eps)


# ----------------------------------------------------------------- check_symmetric_quantize


def quantize_floor(x, scale, bits):
    qmax = 2 ** (bits - 1) - 1
    return torch.clamp(torch.floor(x / scale), -qmax, qmax).to(torch.int8)


def quantize_trunc(x, scale, bits):
    qmax = 2 ** (bits - 1) - 1
    return torch.clamp(x / scale, -qmax, qmax).to(torch.int8)  # the cast truncates


def quantize_half_away(x, scale, bits):
    qmax = 2 ** (bits - 1) - 1
    v = x / scale
    return torch.clamp(torch.sign(v) * torch.floor(v.abs() + 0.5), -qmax, qmax).to(torch.int8)


def quantize_clamp_full(x, scale, bits):
    # the textbook clamp: [-2^(b-1), 2^(b-1) - 1]
    return torch.clamp(torch.round(x / scale), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1).to(
        torch.int8
    )


def quantize_no_clamp(x, scale, bits):
    return torch.round(x / scale).to(torch.int32)


def quantize_returns_float(x, scale, bits):
    qmax = 2 ** (bits - 1) - 1
    return torch.clamp(torch.round(x / scale), -qmax, qmax)


# ----------------------------------------------------------------- check_levels_used


def levels_over_2_pow_b(x, bits):
    q = qc.quantize(x, qc.symmetric_qparams(x, bits))
    return torch.unique(q).numel() / 2**bits


def levels_count_not_fraction(x, bits):
    q = qc.quantize(x, qc.symmetric_qparams(x, bits))
    return torch.unique(q).numel()


def levels_unique_floats(x, bits):
    return torch.unique(x).numel() / (2**bits - 1)


def levels_positive_half(x, bits):
    # counts only the non-negative codes
    q = qc.quantize(x, qc.symmetric_qparams(x, bits))
    return torch.unique(q[q >= 0]).numel() / (2**bits - 1)


WRONG_ANSWERS = {
    "check_symmetric_scale": [
        (scale_full_levels, "2^(b-1) - 1"),
        (scale_full_range, "full-range"),
        (scale_no_eps, "eps"),
        (scale_max_not_abs, "max|x|"),
        (scale_unsigned_levels, "2^b - 1"),
    ],
    "check_symmetric_quantize": [
        (quantize_floor, "floor"),
        (quantize_trunc, "trunc"),
        (quantize_half_away, "halves"),
        (quantize_clamp_full, "no positive twin"),
        (quantize_no_clamp, "saturate"),
        (quantize_returns_float, "integer tensor"),
    ],
    "check_levels_used": [
        (levels_over_2_pow_b, "not 2^b"),
        (levels_count_not_fraction, "fraction"),
        (levels_unique_floats, "distinct float values"),
        (levels_positive_half, "negative ones too"),
    ],
}
