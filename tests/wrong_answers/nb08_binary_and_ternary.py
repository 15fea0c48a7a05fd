"""Plausible wrong answers for the checkers of 08_binary_and_ternary.ipynb."""

import math

import torch

import quantcourse as qc

# ----------------------------------------------------------------- check_binary_dot


def _popcount(b):
    return sum(bin(int(v)).count("1") for v in b.reshape(-1).tolist())


def dot_counts_differing_bits(a_bytes, b_bytes, n):
    return _popcount(a_bytes ^ b_bytes)


def dot_forgets_factor_two(a_bytes, b_bytes, n):
    return n - _popcount(a_bytes ^ b_bytes)


def dot_counts_padding(a_bytes, b_bytes, n):
    # XNOR over whole bytes: the zero padding bits of the last byte count as matches
    same = _popcount(~(a_bytes ^ b_bytes))
    return 2 * same - 8 * a_bytes.numel()


def dot_multiplies_bytes(a_bytes, b_bytes, n):
    return int((a_bytes.to(torch.int64) * b_bytes.to(torch.int64)).sum())


# ----------------------------------------------------------------- check_optimal_ternary


def ternary_rule_of_thumb(w):
    return qc.ternarize(w)


def ternary_keeps_everything(w):
    return qc.binarize(w)


def ternary_max_scale(w):
    # exact best codes, but the scale of the largest weight instead of the mean of the kept
    codes, _ = _best_codes(w)
    return codes, float(w.abs().max())


def _best_codes(w):
    mag, order = torch.sort(w.double().abs(), descending=True)
    gain = torch.cumsum(mag, 0) ** 2 / torch.arange(1, len(mag) + 1, dtype=torch.float64)
    k = int(gain.argmax()) + 1
    codes = torch.zeros_like(w, dtype=torch.int8)
    codes[order[:k]] = torch.sign(w[order[:k]]).to(torch.int8)
    alpha = float(mag[:k].mean()) if k else 0.0
    return codes, alpha


def ternary_keeps_smallest(w):
    # sorts ascending by mistake: keeps the k smallest magnitudes
    codes, _ = _best_codes(w)
    k = int((codes != 0).sum())
    order = torch.argsort(w.abs())
    out = torch.zeros_like(codes)
    out[order[:k]] = torch.sign(w[order[:k]]).to(torch.int8)
    kept = out != 0
    return out, float(w[kept].abs().mean()) if kept.any() else 0.0


# ----------------------------------------------------------------- check_binary_sqnr

_RATIO2 = {"uniform": 0.75, "gaussian": 2 / math.pi, "laplace": 0.5}  # (E|w|)^2 / E[w^2]


def sqnr_twenty_log(dist):
    return -20 * math.log10(1 - _RATIO2[dist])


def sqnr_negative(dist):
    return 10 * math.log10(1 - _RATIO2[dist])


def sqnr_gaussian_for_all(dist):
    return -10 * math.log10(1 - 2 / math.pi)


def sqnr_ratio_not_squared(dist):
    return -10 * math.log10(1 - math.sqrt(_RATIO2[dist]))


WRONG_ANSWERS = {
    "check_binary_dot": [
        (dot_counts_differing_bits, "each differing position contributes -1"),
        (dot_forgets_factor_two, "n - 2 * (differing bits)"),
        (dot_counts_padding, "padding bits"),
        (dot_multiplies_bytes, "each bit is one sign"),
    ],
    "check_optimal_ternary": [
        (ternary_rule_of_thumb, "rule of thumb"),
        (ternary_keeps_everything, "you kept every weight"),
        (ternary_max_scale, "the best alpha is the mean |w| of the kept weights"),
        (ternary_keeps_smallest, "keep the largest magnitudes"),
    ],
    "check_binary_sqnr": [
        (sqnr_twenty_log, "10 log10, not 20 log10"),
        (sqnr_negative, "positive number"),
        (sqnr_gaussian_for_all, "depends on the distribution's shape"),
        (sqnr_ratio_not_squared, "enters squared"),
    ],
}
