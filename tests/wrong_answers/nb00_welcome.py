"""Plausible wrong answers for the checkers of 00_welcome.ipynb."""

import math

import torch

# ---------------------------------------------------------------- check_compression_ratio


def ratio_without_scales(numel, bits, n_scales):  # forgets the float32 scales
    return 4 * numel / math.ceil(numel * bits / 8)


def ratio_quantized_in_bits(numel, bits, n_scales):  # quantized size left in bits
    return 4 * numel / (numel * bits + 32 * n_scales)


def ratio_payload_in_bits(numel, bits, n_scales):  # payload in bits, scales in bytes
    return 4 * numel / (numel * bits + 4 * n_scales)


def ratio_fp32_in_bits(numel, bits, n_scales):  # FP32 size counted in bits
    return 32 * numel / (math.ceil(numel * bits / 8) + 4 * n_scales)


def ratio_floor_bytes(numel, bits, n_scales):  # drops the partly filled last byte
    return 4 * numel / (numel * bits // 8 + 4 * n_scales)


def ratio_one_scale(numel, bits, n_scales):  # always counts a single scale
    return 4 * numel / (math.ceil(numel * bits / 8) + 4)


def ratio_one_byte_scales(numel, bits, n_scales):  # a scale counted as one byte
    return 4 * numel / (math.ceil(numel * bits / 8) + n_scales)


def ratio_inverted(numel, bits, n_scales):  # quantized / FP32 instead of FP32 / quantized
    return (math.ceil(numel * bits / 8) + 4 * n_scales) / (4 * numel)


# ---------------------------------------------------------------- check_int8_roundtrip


def roundtrip_full_range(x):  # divides by 2^(b-1) = 128 and clamps to [-128, 127]
    s = x.abs().max() / 128
    s = torch.clamp(s, min=torch.finfo(torch.float32).eps)
    return torch.clamp(torch.round(x / s), -128, 127) * s


def roundtrip_255_levels(x):  # the asymmetric level count used for a symmetric grid
    s = torch.clamp(x.abs().max() / 255, min=torch.finfo(torch.float32).eps)
    return torch.clamp(torch.round(x / s), -127, 127) * s


def roundtrip_floor(x):  # floor instead of round to nearest
    s = torch.clamp(x.abs().max() / 127, min=torch.finfo(torch.float32).eps)
    return torch.clamp(torch.floor(x / s), -127, 127) * s


def roundtrip_trunc(x):  # int() style truncation towards zero
    s = torch.clamp(x.abs().max() / 127, min=torch.finfo(torch.float32).eps)
    return torch.clamp(torch.trunc(x / s), -127, 127) * s


def roundtrip_no_zero_guard(x):  # the textbook recipe: NaN on an all-zero tensor
    s = x.abs().max() / 127
    return torch.clamp(torch.round(x / s), -127, 127) * s


def roundtrip_returns_q(x):  # forgets to dequantize
    s = torch.clamp(x.abs().max() / 127, min=torch.finfo(torch.float32).eps)
    return torch.clamp(torch.round(x / s), -127, 127)


def roundtrip_mean_scale(x):  # scale from the mean magnitude: clips the large values
    s = torch.clamp(x.abs().mean() * 4 / 127, min=torch.finfo(torch.float32).eps)
    return torch.clamp(torch.round(x / s), -127, 127) * s


def roundtrip_identity(x):  # no quantization at all
    return x.clone()


WRONG_ANSWERS = {
    "check_compression_ratio": [
        (ratio_without_scales, "left out the scales"),
        (ratio_quantized_in_bits, "in bits"),
        (ratio_payload_in_bits, "BITS"),
        (ratio_fp32_in_bits, "FP32 size in bits"),
        (ratio_floor_bytes, "not down"),
        (ratio_one_scale, "multiply by n_scales"),
        (ratio_one_byte_scales, "4 bytes, not 1"),
        (ratio_inverted, "not the other way round"),
    ],
    "check_int8_roundtrip": [
        (roundtrip_full_range, "128"),
        (roundtrip_255_levels, "255"),
        (roundtrip_floor, "floor"),
        (roundtrip_trunc, "trunc"),
        (roundtrip_no_zero_guard, "divides by zero"),
        (roundtrip_returns_q, "dequantize"),
        (roundtrip_mean_scale, "grid step"),
        (roundtrip_identity, "unchanged"),
    ],
}
