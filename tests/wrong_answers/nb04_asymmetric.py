"""Plausible wrong answers for the checkers of 04_asymmetric.ipynb."""

import torch

EPS = torch.finfo(torch.float32).eps


def _grid(bits, signed):
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


# ---------------------------------------------------------------- check_zero_point


def zp_off_by_one(x_min, x_max, bits, signed=False):  # an extra +1 on the zero point
    qmin, qmax = _grid(bits, signed)
    lo, hi = min(x_min, 0.0), max(x_max, 0.0)
    s = (hi - lo) / (qmax - qmin)
    return s, min(max(qmin - round(lo / s) + 1, qmin), qmax)


def zp_sign_error(x_min, x_max, bits, signed=False):  # qmin + round(min / s)
    qmin, qmax = _grid(bits, signed)
    lo, hi = min(x_min, 0.0), max(x_max, 0.0)
    s = (hi - lo) / (qmax - qmin)
    return s, qmin + round(lo / s)


def zp_not_rounded(x_min, x_max, bits, signed=False):  # a fractional zero point
    qmin, qmax = _grid(bits, signed)
    lo, hi = min(x_min, 0.0), max(x_max, 0.0)
    s = (hi - lo) / (qmax - qmin)
    return s, min(max(qmin - lo / s, qmin), qmax)


def zp_not_widened(x_min, x_max, bits, signed=False):  # the notes' recipe: clamped, not widened
    qmin, qmax = _grid(bits, signed)
    s = max((x_max - x_min) / (qmax - qmin), EPS)
    return s, min(max(qmin - round(x_min / s), qmin), qmax)


def zp_not_widened_not_clamped(x_min, x_max, bits, signed=False):
    qmin, qmax = _grid(bits, signed)
    s = max((x_max - x_min) / (qmax - qmin), EPS)
    return s, qmin - round(x_min / s)


def zp_narrow_signed_grid(x_min, x_max, bits, signed=False):  # signed grid [-(2^(b-1)-1), ...]
    qmin, qmax = _grid(bits, signed)
    if signed:
        qmin += 1
    lo, hi = min(x_min, 0.0), max(x_max, 0.0)
    s = (hi - lo) / (qmax - qmin)
    return s, min(max(qmin - round(lo / s), qmin), qmax)


def zp_qmax_levels(x_min, x_max, bits, signed=False):  # divides by 2^b levels, not 2^b - 1 steps
    qmin, qmax = _grid(bits, signed)
    lo, hi = min(x_min, 0.0), max(x_max, 0.0)
    s = (hi - lo) / 2**bits
    return s, min(max(qmin - round(lo / s), qmin), qmax)


# ---------------------------------------------------------------- check_asymmetric_roundtrip


def _qparams(x, bits):
    qmax = 2**bits - 1
    lo = torch.clamp(x.min(), max=0.0)
    hi = torch.clamp(x.max(), min=0.0)
    s = torch.clamp((hi - lo) / qmax, min=EPS)
    z = torch.clamp(-torch.round(lo / s), 0, qmax)
    return s, z, qmax


def rt_zero_point_before_rounding(x, bits):  # round(x/s + z), as the notes write it
    s, z, qmax = _qparams(x, bits)
    q = torch.clamp(torch.round(x * (1 / s) + z), 0, qmax)
    return q, s * (q - z)


def rt_no_eps(x, bits):  # all-zero input: 0 / 0
    qmax = 2**bits - 1
    lo = torch.clamp(x.min(), max=0.0)
    hi = torch.clamp(x.max(), min=0.0)
    s = (hi - lo) / qmax
    z = torch.clamp(-torch.round(lo / s), 0, qmax)
    q = torch.clamp(torch.round(x / s) + z, 0, qmax)
    return q, s * (q - z)


def rt_not_widened(x, bits):  # the notes' range [min, max] (with an eps guard)
    qmax = 2**bits - 1
    lo, hi = x.min(), x.max()
    s = torch.clamp((hi - lo) / qmax, min=EPS)
    z = torch.clamp(-torch.round(lo / s), 0, qmax)
    q = torch.clamp(torch.round(x * (1 / s)) + z, 0, qmax)
    return q, s * (q - z)


def rt_floor(x, bits):  # floor instead of round
    s, z, qmax = _qparams(x, bits)
    q = torch.clamp(torch.floor(x * (1 / s)) + z, 0, qmax)
    return q, s * (q - z)


def rt_half_away(x, bits):  # Python-2 style rounding: half away from zero
    s, z, qmax = _qparams(x, bits)
    v = x * (1 / s)
    q = torch.clamp(torch.sign(v) * torch.floor(v.abs() + 0.5) + z, 0, qmax)
    return q, s * (q - z)


def rt_dequant_without_zero_point(x, bits):  # x_hat = s * q
    s, z, qmax = _qparams(x, bits)
    q = torch.clamp(torch.round(x * (1 / s)) + z, 0, qmax)
    return q, s * q


# ---------------------------------------------------------------- check_zero_point_matmul


def mm_forgot_constant(qa, za, qw, zw):
    return -zw * qa.sum(1, keepdim=True) - za * qw.sum(0, keepdim=True)


def mm_sign_error(qa, za, qw, zw):
    return zw * qa.sum(1, keepdim=True) + za * qw.sum(0, keepdim=True) + qa.shape[1] * za * zw


def mm_swapped_zero_points(qa, za, qw, zw):
    return -za * qa.sum(1, keepdim=True) - zw * qw.sum(0, keepdim=True) + qa.shape[1] * za * zw


def mm_wrong_count(qa, za, qw, zw):  # N (output columns) instead of K (inner dimension)
    return -zw * qa.sum(1, keepdim=True) - za * qw.sum(0, keepdim=True) + qw.shape[1] * za * zw


def mm_wrong_axis(qa, za, qw, zw):  # sums over the wrong dimension
    return -zw * qa.sum(0, keepdim=True) - za * qw.sum(1, keepdim=True) + qa.shape[1] * za * zw


WRONG_ANSWERS = {
    "check_zero_point": [
        (zp_off_by_one, "off by one"),
        (zp_sign_error, "sign error"),
        (zp_not_rounded, "integer code"),
        (zp_not_widened, "include 0"),
        (zp_not_widened_not_clamped, "include 0"),
        (zp_narrow_signed_grid, "scale"),
        (zp_qmax_levels, "scale"),
    ],
    "check_asymmetric_roundtrip": [
        (rt_zero_point_before_rounding, "AFTER rounding"),
        (rt_no_eps, "eps"),
        (rt_not_widened, "include 0"),
        (rt_floor, "integer codes"),
        (rt_half_away, "half away from zero"),
        (rt_dequant_without_zero_point, "x_hat = s * (q - z)"),
    ],
    "check_zero_point_matmul": [
        (mm_forgot_constant, "K * za * zw"),
        (mm_sign_error, "signs"),
        (mm_swapped_zero_points, "which zero point"),
        (mm_wrong_count, "inner"),
        (mm_wrong_axis, "shape"),
    ],
}
