"""Plausible wrong answers for the checkers of 06_bit_widths_and_packing.ipynb."""

import math

import torch

# ----------------------------------------------------------------- check_pack_nibbles


def _pad_even(codes):
    codes = codes.to(torch.uint8)
    if codes.numel() % 2:
        codes = torch.cat([codes, codes.new_zeros(1)])
    return codes


def pack_high_nibble_first(codes):
    c = _pad_even(codes)
    return (c[0::2] << 4) | c[1::2]


def pack_no_padding(codes):
    # drops the odd code out: zip stops at the shorter half
    c = codes.to(torch.uint8)
    n = c.numel() // 2
    return c[0 : 2 * n : 2] | (c[1 : 2 * n : 2] << 4)


def pack_pad_with_ones(codes):
    c = codes.to(torch.uint8)
    if c.numel() % 2:
        c = torch.cat([c, c.new_full((1,), 15)])
    return c[0::2] | (c[1::2] << 4)


def pack_one_per_byte(codes):
    return codes.to(torch.uint8)


def pack_returns_float(codes):
    c = _pad_even(codes)
    return (c[0::2] | (c[1::2] << 4)).float()


# ----------------------------------------------------------------- check_storage_bytes


def _n_scales(rows, cols, group_size):
    return rows if group_size is None else rows * (cols // group_size)


def storage_without_scales(rows, cols, bits, group_size=None):
    return math.ceil(rows * cols * bits / 8)


def storage_rounds_down(rows, cols, bits, group_size=None):
    return rows * cols * bits // 8 + 4 * _n_scales(rows, cols, group_size)


def storage_fp16_scales(rows, cols, bits, group_size=None):
    return math.ceil(rows * cols * bits / 8) + 2 * _n_scales(rows, cols, group_size)


def storage_one_scale(rows, cols, bits, group_size=None):
    return math.ceil(rows * cols * bits / 8) + 4


def storage_bits_not_bytes(rows, cols, bits, group_size=None):
    return rows * cols * bits + 4 * _n_scales(rows, cols, group_size)


def storage_one_scale_per_row_always(rows, cols, bits, group_size=None):
    return math.ceil(rows * cols * bits / 8) + 4 * rows


# ----------------------------------------------------------------- check_sqnr_rule


def gain_six_db_per_bit(bits, extra_bits):
    return 20 * math.log10(2) * extra_bits


def gain_power_log(bits, extra_bits):
    return 10 * math.log10((2 ** (bits + extra_bits - 1) - 1) / (2 ** (bits - 1) - 1))


def gain_levels_ratio(bits, extra_bits):
    return 20 * math.log10((2 ** (bits + extra_bits) - 1) / (2**bits - 1))


def gain_natural_log(bits, extra_bits):
    return 20 * math.log((2 ** (bits + extra_bits - 1) - 1) / (2 ** (bits - 1) - 1))


WRONG_ANSWERS = {
    "check_pack_nibbles": [
        (pack_high_nibble_first, "low nibble"),
        (pack_no_padding, "pad"),
        (pack_pad_with_ones, "zero padding"),
        (pack_one_per_byte, "two 4-bit codes share each byte"),
        (pack_returns_float, "integer tensor"),
    ],
    "check_storage_bytes": [
        (storage_without_scales, "add the scales"),
        (storage_rounds_down, "round the packed bytes up"),
        (storage_fp16_scales, "4 bytes, not 2"),
        (storage_one_scale, "not one per tensor"),
        (storage_bits_not_bytes, "divide by 8"),
        (storage_one_scale_per_row_always, "scales per row"),
    ],
    "check_sqnr_rule": [
        (gain_six_db_per_bit, "many-bit limit"),
        (gain_power_log, "20 log10, not 10 log10"),
        (gain_levels_ratio, "not the number of levels"),
        (gain_natural_log, "log10, not the natural log"),
    ],
}
