"""Plausible wrong answers for the checkers of 02_scale_and_zero_point.ipynb."""

import torch

# ----------------------------------------------------------------- check_quantize


def quantize_zero_point_before_round(x, scale, zero_point, qmin, qmax):
    # the notes' formula read as round(x/s + z): exact halves go the other way when z is odd
    return torch.clamp(torch.round(x * (1 / scale) + zero_point), qmin, qmax)


def quantize_floor(x, scale, zero_point, qmin, qmax):
    return torch.clamp(torch.floor(x * (1 / scale)) + zero_point, qmin, qmax)


def quantize_round_half_away(x, scale, zero_point, qmin, qmax):
    v = x * (1 / scale)
    return torch.clamp(torch.sign(v) * torch.floor(v.abs() + 0.5) + zero_point, qmin, qmax)


def quantize_no_clamp(x, scale, zero_point, qmin, qmax):
    return torch.round(x * (1 / scale)) + zero_point


def quantize_minus_zero_point(x, scale, zero_point, qmin, qmax):
    return torch.clamp(torch.round(x * (1 / scale)) - zero_point, qmin, qmax)


def quantize_zero_point_off_by_one(x, scale, zero_point, qmin, qmax):
    return torch.clamp(torch.round(x * (1 / scale)) + zero_point + 1, qmin, qmax)


def quantize_divide(x, scale, zero_point, qmin, qmax):
    # x / s instead of x * (1/s): differs from PyTorch at (near-)exact halves
    return torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax)


# ----------------------------------------------------------------- check_dequantize


def dequantize_uint8_wraps(q, scale, zero_point):
    # q - z in the integer dtype of q: uint8 wraps around below 0
    return scale * (q - zero_point)


def dequantize_plus_zero_point(q, scale, zero_point):
    return scale * (q.float() + zero_point)


def dequantize_zero_point_after_scale(q, scale, zero_point):
    return scale * q.float() - zero_point


# ----------------------------------------------------------------- check_affine_qparams


def qparams_no_widening(x, bits):
    # the range is not widened to include 0: an all-positive tensor gets a negative zero point
    s = (x.max() - x.min()) / (2**bits - 1)
    return s, 0 - torch.round(x.min() / s)


def qparams_full_levels(x, bits):
    lo, hi = torch.clamp(x.min(), max=0.0), torch.clamp(x.max(), min=0.0)
    s = (hi - lo) / 2**bits
    return s, 0 - torch.round(lo / s)


def qparams_zero_point_sign(x, bits):
    lo, hi = torch.clamp(x.min(), max=0.0), torch.clamp(x.max(), min=0.0)
    s = (hi - lo) / (2**bits - 1)
    return s, 0 + torch.round(lo / s)


def qparams_truncated_zero_point(x, bits):
    lo, hi = torch.clamp(x.min(), max=0.0), torch.clamp(x.max(), min=0.0)
    s = (hi - lo) / (2**bits - 1)
    return s, int(-lo / s)


def qparams_zero_point_off_by_one(x, bits):
    lo, hi = torch.clamp(x.min(), max=0.0), torch.clamp(x.max(), min=0.0)
    s = (hi - lo) / (2**bits - 1)
    return s, 1 - torch.round(lo / s)


def qparams_fractional_zero_point(x, bits):
    lo, hi = torch.clamp(x.min(), max=0.0), torch.clamp(x.max(), min=0.0)
    s = (hi - lo) / (2**bits - 1)
    return s, -lo / s


WRONG_ANSWERS = {
    "check_quantize": [
        (quantize_zero_point_before_round, "after rounding"),
        (quantize_floor, "floor"),
        (quantize_round_half_away, "half"),
        (quantize_no_clamp, "clamp"),
        (quantize_minus_zero_point, "sign"),
        (quantize_zero_point_off_by_one, "off by one"),
        (quantize_divide, "reciprocal"),
    ],
    "check_dequantize": [
        (dequantize_uint8_wraps, "wraps"),
        (dequantize_plus_zero_point, "sign"),
        (dequantize_zero_point_after_scale, "before multiplying"),
    ],
    "check_affine_qparams": [
        (qparams_no_widening, "include 0"),
        (qparams_full_levels, "2**bits - 1"),
        (qparams_zero_point_sign, "sign"),
        (qparams_truncated_zero_point, "truncate"),
        (qparams_zero_point_off_by_one, "off by one"),
        (qparams_fractional_zero_point, "integer"),
    ],
}
