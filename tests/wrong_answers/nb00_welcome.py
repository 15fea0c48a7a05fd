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


# ---------------------------------------------------------------- check_largest_fit


def _fit(models, formats, memory, reserved, context, kv_per_token_layer, prefer_small=False):
    best = None
    for name, (params, layers, kv_dim) in models.items():
        kv = kv_per_token_layer(kv_dim) * layers * context
        for fmt, bpp in formats.items():
            if params * bpp + kv <= memory - reserved:
                key = (params, -bpp if prefer_small else bpp)
                if best is None or key > best[0]:
                    best = (key, (name, fmt))
    return None if best is None else best[1]


def fit_no_kv_cache(models, formats, memory, reserved, context):  # weights only
    return _fit(models, formats, memory, reserved, context, lambda d: 0)


def fit_keys_only(models, formats, memory, reserved, context):  # forgets the values
    return _fit(models, formats, memory, reserved, context, lambda d: d * 2)


def fit_most_compressed(models, formats, memory, reserved, context):  # INT4 whenever it fits
    return _fit(models, formats, memory, reserved, context, lambda d: 2 * d * 2,
                prefer_small=True)


def fit_ignores_reserved(models, formats, memory, reserved, context):  # the whole memory
    return _fit(models, formats, memory, 0, context, lambda d: 2 * d * 2)


# ---------------------------------------------------------------- check_output_error_bound


def _row_scales(W, bits, qmax=None):
    qmax = 2 ** (bits - 1) - 1 if qmax is None else qmax
    return torch.clamp(W.abs().amax(dim=1) / qmax, min=torch.finfo(torch.float32).eps)


def bound_full_step(W, X, bits):  # a whole step, not half
    return X.abs().sum(dim=1, keepdim=True) * _row_scales(W, bits)


def bound_per_tensor_scale(W, X, bits):  # one scale for the whole matrix
    s = W.abs().max() / (2 ** (bits - 1) - 1)
    return X.abs().sum(dim=1, keepdim=True) * (s / 2) * torch.ones(W.shape[0])


def bound_signed_sum(W, X, bits):  # sum of x, not of |x|
    return X.sum(dim=1, keepdim=True) * (_row_scales(W, bits) / 2)


def bound_l2_norm(W, X, bits):  # the typical size, not a worst case
    return X.norm(dim=1, keepdim=True) * (_row_scales(W, bits) / 2)


def bound_qmax_power_of_two(W, X, bits):  # q_max = 2^(b-1)
    return X.abs().sum(dim=1, keepdim=True) * (_row_scales(W, bits, 2 ** (bits - 1)) / 2)


def bound_with_qc(W, X, bits):  # measures instead of bounding, with the package
    import quantcourse as qc
    qp = qc.symmetric_qparams(W, bits=bits, axis=0)
    return (X @ (W - qc.dequantize(qc.quantize(W, qp), qp)).T).abs()


def bound_transposed(W, X, bits):  # (out, tokens) instead of (tokens, out)
    return (X.abs().sum(dim=1, keepdim=True) * (_row_scales(W, bits) / 2)).T


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
    "check_largest_fit": [
        (fit_no_kv_cache, "count the KV cache"),
        (fit_keys_only, "keys AND values"),
        (fit_most_compressed, "most precise"),
        (fit_ignores_reserved, "reserved memory"),
    ],
    "check_output_error_bound": [
        (bound_full_step, "HALF a step"),
        (bound_per_tensor_scale, "its own scale"),
        (bound_signed_sum, "not X_ik"),
        (bound_l2_norm, "typical size"),
        (bound_qmax_power_of_two, "q_max = 2^(b-1) - 1"),
        (bound_with_qc, "without the package"),
        (bound_transposed, "expected shape"),
    ],
}
