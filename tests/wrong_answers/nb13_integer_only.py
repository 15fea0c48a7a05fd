"""Plausible wrong answers for the checkers of 13_integer_only_inference.ipynb."""

import torch

import quantcourse as qc

# ---------------------------------------------------------------- check_single_rounding


def sr_double_rounding(acc, m0, shift):  # the reference kernel: rounds twice
    return qc.multiply_by_quantized_multiplier(acc, m0, shift)


def sr_floor(acc, m0, shift):  # an arithmetic shift without rounding
    return torch.clamp((acc.long() * m0) >> (31 - shift), -(2**31), 2**31 - 1).int()


def sr_half_up(acc, m0, shift):  # adds half then shifts: negative ties go up, not away
    e = 31 - shift
    return torch.clamp((acc.long() * m0 + 2 ** (e - 1)) >> e, -(2**31), 2**31 - 1).int()


def sr_wrong_shift_sign(acc, m0, shift):  # divides by 2^(31 + shift)
    e = 31 + shift
    p = acc.long() * m0
    mag = (p.abs() + 2 ** (e - 1)) >> e
    return torch.clamp(torch.where(p < 0, -mag, mag), -(2**31), 2**31 - 1).int()


def sr_float(acc, m0, shift):  # float32 arithmetic: not integer-only, and inexact
    return torch.round(acc.float() * m0 * 2.0 ** (shift - 31))


# ---------------------------------------------------------------- check_requantize_relu6


def _requant(acc, multiplier):
    return qc.multiply_by_quantized_multiplier(acc, *qc.quantize_multiplier(multiplier))


def r6_relu_only(acc, multiplier, scale_out, z_out):  # ReLU, but nothing caps it at 6
    return torch.clamp(_requant(acc, multiplier) + z_out, z_out, 127).to(torch.int8)


def r6_no_relu(acc, multiplier, scale_out, z_out):  # the grid's ends only
    top = min(127, z_out + round(6 / scale_out))
    return torch.clamp(_requant(acc, multiplier) + z_out, -128, top).to(torch.int8)


def r6_six_codes(acc, multiplier, scale_out, z_out):  # caps at 6 codes, not at real 6
    return torch.clamp(_requant(acc, multiplier) + z_out, z_out, z_out + 6).to(torch.int8)


def r6_torch_round(acc, multiplier, scale_out, z_out):  # float rounding, half to even
    top = min(127, z_out + round(6 / scale_out))
    y = torch.round(acc.double() * multiplier) + z_out
    return torch.clamp(y, z_out, top).to(torch.int8)


# ---------------------------------------------------------------- check_int_avg_pool


def _window_sums(q):
    n, c, h, w = q.shape
    return q.long().reshape(n, c, h // 2, 2, w // 2, 2).sum(dim=(3, 5))


def ap_floor_division(q, z):
    return (_window_sums(q) // 4).to(torch.int8)


def ap_truncate(q, z):  # C integer division
    return torch.div(_window_sums(q), 4, rounding_mode="trunc").to(torch.int8)


def ap_round_half_even(q, z):
    return torch.round(_window_sums(q) / 4).to(torch.int8)


def ap_int8_overflow(q, z):  # adds the four codes in int8: 127 + 127 wraps
    n, c, h, w = q.shape
    v = q.reshape(n, c, h // 2, 2, w // 2, 2)
    s = v[:, :, :, 0, :, 0] + v[:, :, :, 0, :, 1] + v[:, :, :, 1, :, 0] + v[:, :, :, 1, :, 1]
    s = s.long()
    return (torch.sign(s) * ((s.abs() + 2) // 4)).to(torch.int8)


def ap_forgot_zero_point(q, z):  # removes the zero point and never adds it back
    s = _window_sums(q) - 4 * z
    return (torch.sign(s) * ((s.abs() + 2) // 4))


WRONG_ANSWERS = {
    "check_single_rounding": [
        (sr_double_rounding, "double rounding"),
        (sr_floor, "off by one"),
        (sr_half_up, "off by one"),
        (sr_wrong_shift_sign, "2^(31 - shift)"),
        (sr_float, "integer codes"),
    ],
    "check_requantize_relu6": [
        (r6_relu_only, "real value 6"),
        (r6_no_relu, "zero point"),
        (r6_six_codes, "not z_out + 6"),
        (r6_torch_round, "half to even"),
    ],
    "check_int_avg_pool": [
        (ap_floor_division, "floors"),
        (ap_truncate, "truncating"),
        (ap_round_half_even, "half to even"),
        (ap_int8_overflow, "overflow"),
        (ap_forgot_zero_point, "zero point"),
    ],
}
