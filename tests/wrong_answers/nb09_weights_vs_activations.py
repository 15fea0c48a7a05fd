"""Plausible wrong answers for the checkers of 09_weights_vs_activations.ipynb."""

import math

import quantcourse as qc

# ---------------------------------------------------------------- check_smooth_outlier


def _maxima(x, w):
    return x.abs().amax(dim=0).clamp(min=1e-5), w.abs().amax(dim=0).clamp(min=1e-5)


def sm_inverted(x, w, alpha):  # multiplies X and divides W: the outlier grows
    a, b = _maxima(x, w)
    m = a**alpha / b ** (1 - alpha)
    return x * m, w / m


def sm_swapped_exponents(x, w, alpha):  # alpha on the weights, 1 - alpha on the activations
    a, b = _maxima(x, w)
    m = a ** (1 - alpha) / b**alpha
    return x / m, w * m


def sm_no_floor(x, w, alpha):  # a channel that is always zero gives m = 0, then 0 / 0
    a, b = x.abs().amax(dim=0), w.abs().amax(dim=0)
    m = a**alpha / b ** (1 - alpha)
    return x / m, w * m


def sm_no_abs(x, w, alpha):  # the largest value, not the largest magnitude
    a = x.amax(dim=0).clamp(min=1e-5)
    b = w.abs().amax(dim=0).clamp(min=1e-5)
    m = a**alpha / b ** (1 - alpha)
    return x / m, w * m


def sm_weight_rows(x, w, alpha):  # scales the rows of W (output channels) instead of columns
    a, b = _maxima(x, w)
    m = a**alpha / b ** (1 - alpha)
    return x / m, w * m[: w.shape[0], None]


# ---------------------------------------------------------------- check_cheaper_scheme


def _pick(w4a16, w8a8):
    return ("W4A16" if w4a16 < w8a8 else "W8A8"), w4a16, w8a8


def cs_weights_per_token(out_f, in_f, tokens):  # weights counted once per token
    w4 = math.ceil(out_f * in_f * 4 / 8) * tokens + tokens * in_f * 2
    w8 = out_f * in_f * tokens + tokens * in_f
    return _pick(w4, w8)


def cs_out_features(out_f, in_f, tokens):  # activations of width out_features
    return _pick(math.ceil(out_f * in_f / 2) + tokens * out_f * 2, out_f * in_f + tokens * out_f)


def cs_no_tokens(out_f, in_f, tokens):  # one token's activations whatever the batch
    return _pick(math.ceil(out_f * in_f / 2) + in_f * 2, out_f * in_f + in_f)


def cs_floor(out_f, in_f, tokens):  # half a byte of 4-bit weights dropped
    return _pick(out_f * in_f // 2 + tokens * in_f * 2, out_f * in_f + tokens * in_f)


def cs_tie_to_w4a16(out_f, in_f, tokens):  # a tie goes to the wrong scheme
    w4, w8 = math.ceil(out_f * in_f / 2) + tokens * in_f * 2, out_f * in_f + tokens * in_f
    return ("W4A16" if w4 <= w8 else "W8A8"), w4, w8


# ---------------------------------------------------------------- check_token_gain


def _ratio(rows, bits, make, axis=0):
    e_tensor = qc.mse(rows, qc.fake_quantize(rows, make(rows, bits)))
    return e_tensor / qc.mse(rows, qc.fake_quantize(rows, make(rows, bits, axis=axis)))


def tg_padding_kept(x, real, bits):  # quantizes the padding rows too
    return _ratio(x.reshape(-1, x.shape[-1]), bits, qc.asymmetric_qparams)


def tg_inverted(x, real, bits):  # per token over per tensor
    return 1 / _ratio(x[real], bits, qc.asymmetric_qparams)


def tg_symmetric(x, real, bits):  # symmetric grids
    return _ratio(x[real], bits, qc.symmetric_qparams)


def tg_per_channel(x, real, bits):  # axis=1: one scale per channel
    return _ratio(x[real], bits, qc.asymmetric_qparams, axis=1)


WRONG_ANSWERS = {
    "check_smooth_outlier": [
        (sm_inverted, "divide X by m"),
        (sm_swapped_exponents, "alpha goes on the activation maximum"),
        (sm_no_floor, "floor both maxima"),
        (sm_no_abs, "largest magnitude"),
        (sm_weight_rows, "column k of W"),
    ],
    "check_cheaper_scheme": [
        (cs_weights_per_token, "read once per forward pass"),
        (cs_out_features, "in_features input values"),
        (cs_no_tokens, "multiply the activation count by tokens"),
        (cs_floor, "round the packed 4-bit weights up"),
        (cs_tie_to_w4a16, "tie goes to W8A8"),
    ],
    "check_token_gain": [
        (tg_padding_kept, "padding rows"),
        (tg_inverted, "upside down"),
        (tg_symmetric, "asymmetric"),
        (tg_per_channel, "axis=0"),
    ],
}
