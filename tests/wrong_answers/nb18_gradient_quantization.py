"""Plausible wrong answers for the checkers of 18_gradient_quantization.ipynb."""

import math

import torch

# ----------------------------------------------------------------- check_wire_bytes


def bytes_without_scales(numel, kind, levels, chunk):
    bits = 1 if kind == "sign" else 2 if levels == 1 else 4 if levels <= 7 else 8
    return math.ceil(numel * bits / 8)


def bytes_one_byte_per_code(numel, kind, levels, chunk):
    bits = 1 if kind == "sign" else 8
    return math.ceil(numel * bits / 8) + 4 * math.ceil(numel / chunk)


def bytes_floor_chunks(numel, kind, levels, chunk):
    bits = 1 if kind == "sign" else 2 if levels == 1 else 4 if levels <= 7 else 8
    return math.ceil(numel * bits / 8) + 4 * (numel // chunk)


# ----------------------------------------------------------------- check_qsgd_variance


def variance_bound_instead(g, levels, chunk):
    return sum(min(chunk / levels**2, math.sqrt(chunk) / levels) * float(b.double().norm() ** 2)
               for b in g.split(chunk))


def variance_one_norm(g, levels, chunk):
    # one norm for the whole tensor instead of one per chunk
    g = g.double()
    norm = g.norm()
    r = levels * g.abs() / norm
    p = r - r.floor()
    return float(((norm / levels) ** 2 * p * (1 - p)).sum())


# ----------------------------------------------------------------- check_topk_error_feedback


def topk_ignores_residual_in_selection(g, residual, k):
    corrected = g + residual
    sent = torch.zeros_like(g)
    idx = g.abs().topk(k).indices
    sent[idx] = corrected[idx]
    return sent, corrected - sent


def topk_without_feedback(g, residual, k):
    sent = torch.zeros_like(g)
    idx = g.abs().topk(k).indices
    sent[idx] = g[idx]
    return sent, torch.zeros_like(g)


WRONG_ANSWERS = {
    "check_wire_bytes": [
        (bytes_without_scales, "float32 scale"),
        (bytes_one_byte_per_code, "smallest packable width"),
        (bytes_floor_chunks, "round the chunk count up"),
    ],
    "check_qsgd_variance": [
        (variance_bound_instead, "worst-case bound"),
        (variance_one_norm, "every chunk has its own norm"),
    ],
    "check_topk_error_feedback": [
        (topk_ignores_residual_in_selection, "not from g alone"),
        (topk_without_feedback, "differ"),
    ],
}
