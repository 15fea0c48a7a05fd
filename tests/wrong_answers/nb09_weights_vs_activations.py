"""Plausible wrong answers for the checkers of 09_weights_vs_activations.ipynb."""

import math

import torch

EPS = torch.finfo(torch.float32).eps


# ---------------------------------------------------------------- check_per_token_qparams


def tok_per_column(x, bits):  # one scale per channel (column) instead of per token (row)
    return torch.clamp(x.abs().amax(dim=0) / (2 ** (bits - 1) - 1), min=EPS)


def tok_per_tensor(x, bits):  # a single scale for the whole activation
    return torch.clamp(x.abs().max() / (2 ** (bits - 1) - 1), min=EPS)


def tok_per_tensor_broadcast(x, bits):  # the per-tensor scale repeated for every row
    s = torch.clamp(x.abs().max() / (2 ** (bits - 1) - 1), min=EPS)
    return s.expand(x.shape[0]).clone()


def tok_full_levels(x, bits):  # divides by 2^(b-1) instead of 2^(b-1) - 1
    return torch.clamp(x.abs().amax(dim=1) / 2 ** (bits - 1), min=EPS)


def tok_no_eps(x, bits):  # an all-zero padding row gets a scale of 0
    return x.abs().amax(dim=1) / (2 ** (bits - 1) - 1)


def tok_no_abs(x, bits):  # the largest value, not the largest magnitude
    return torch.clamp(x.amax(dim=1) / (2 ** (bits - 1) - 1), min=EPS)


# ---------------------------------------------------------------- check_activation_fake_quant


def _asym(x, bits, lo, hi):
    qmax = 2**bits - 1
    s = torch.clamp((hi - lo) / qmax, min=EPS)
    z = torch.clamp(-torch.round(lo / s), 0, qmax)
    return s, z, qmax


def fq_symmetric(x, bits):  # a symmetric grid on skewed (ReLU) activations
    qmax = 2 ** (bits - 1) - 1
    s = torch.clamp(x.abs().max() / qmax, min=EPS)
    return s * torch.clamp(torch.round(x / s), -qmax, qmax)


def fq_no_eps(x, bits):  # all-zero input: 0 / 0
    qmax = 2**bits - 1
    lo, hi = torch.clamp(x.min(), max=0.0), torch.clamp(x.max(), min=0.0)
    s = (hi - lo) / qmax
    z = torch.clamp(-torch.round(lo / s), 0, qmax)
    q = torch.clamp(torch.round(x / s) + z, 0, qmax)
    return s * (q - z)


def fq_not_widened(x, bits):  # range [x.min(), x.max()] without including 0
    s, z, qmax = _asym(x, bits, x.min(), x.max())
    q = torch.clamp(torch.round(x * (1 / s)) + z, 0, qmax)
    return s * (q - z)


def fq_zero_point_before_rounding(x, bits):  # round(x/s + z)
    s, z, qmax = _asym(x, bits, torch.clamp(x.min(), max=0.0), torch.clamp(x.max(), min=0.0))
    q = torch.clamp(torch.round(x * (1 / s) + z), 0, qmax)
    return s * (q - z)


def fq_per_row(x, bits):  # one grid per row instead of one per tensor
    flat = x.reshape(-1, x.shape[-1])
    lo = torch.clamp(flat.amin(dim=1, keepdim=True), max=0.0)
    hi = torch.clamp(flat.amax(dim=1, keepdim=True), min=0.0)
    s, z, qmax = _asym(flat, bits, lo, hi)
    q = torch.clamp(torch.round(flat * (1 / s)) + z, 0, qmax)
    return (s * (q - z)).reshape(x.shape)


def fq_returns_codes(x, bits):  # forgets to dequantize
    s, z, qmax = _asym(x, bits, torch.clamp(x.min(), max=0.0), torch.clamp(x.max(), min=0.0))
    return torch.clamp(torch.round(x * (1 / s)) + z, 0, qmax)


# ---------------------------------------------------------------- check_weight_vs_activation_bytes


def by_weights_per_token(n_weights, vpt, batch, seq_len, w_bits, a_bits):
    tokens = batch * seq_len
    return math.ceil(n_weights * w_bits / 8) * tokens, math.ceil(tokens * vpt * a_bits / 8)


def by_no_batch(n_weights, vpt, batch, seq_len, w_bits, a_bits):  # one sequence only
    return math.ceil(n_weights * w_bits / 8), math.ceil(seq_len * vpt * a_bits / 8)


def by_bits_not_bytes(n_weights, vpt, batch, seq_len, w_bits, a_bits):
    return n_weights * w_bits, batch * seq_len * vpt * a_bits


def by_floor(n_weights, vpt, batch, seq_len, w_bits, a_bits):
    return n_weights * w_bits // 8, batch * seq_len * vpt * a_bits // 8


def by_swapped_bits(n_weights, vpt, batch, seq_len, w_bits, a_bits):
    return math.ceil(n_weights * a_bits / 8), math.ceil(batch * seq_len * vpt * w_bits / 8)


WRONG_ANSWERS = {
    "check_per_token_qparams": [
        (tok_per_column, "per column"),
        (tok_per_tensor, "single (per-tensor) scale"),
        (tok_per_tensor_broadcast, "per tensor"),
        (tok_full_levels, "2^(b-1) - 1"),
        (tok_no_eps, "eps"),
        (tok_no_abs, "|x|"),
    ],
    "check_activation_fake_quant": [
        (fq_symmetric, "asymmetric"),
        (fq_no_eps, "eps"),
        (fq_not_widened, "include 0"),
        (fq_zero_point_before_rounding, "AFTER rounding"),
        (fq_per_row, "per tensor"),
        (fq_returns_codes, "s * (q - z)"),
    ],
    "check_weight_vs_activation_bytes": [
        (by_weights_per_token, "read once per forward pass"),
        (by_no_batch, "batch x seq_len"),
        (by_bits_not_bytes, "bits / 8"),
        (by_floor, "round up"),
        (by_swapped_bits, "swapped"),
    ],
}
