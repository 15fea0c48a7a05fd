"""Plausible wrong answers for the checkers of 03_symmetric.ipynb."""

import torch

import quantcourse as qc

# ----------------------------------------------------------------- check_weight_range


def _fits(lo, hi, x_qmin, x_qmax, acc_bits, pairs):
    prods = [lo * x_qmin, lo * x_qmax, hi * x_qmin, hi * x_qmax]
    return (-(2 ** (acc_bits - 1)) <= pairs * min(prods)
            and pairs * max(prods) <= 2 ** (acc_bits - 1) - 1)


def range_always_full(w, bits, x_qmin, x_qmax, acc_bits, pairs):
    return False  # the full range has the smaller step, so always take it


def range_grid_bounds(w, bits, x_qmin, x_qmax, acc_bits, pairs):
    # judges each grid by its ends, not by the codes this tensor has
    q = 2 ** (bits - 1)
    if _fits(-q, q - 1, x_qmin, x_qmax, acc_bits, pairs):
        return False
    if _fits(-(q - 1), q - 1, x_qmin, x_qmax, acc_bits, pairs):
        return True
    return None


def range_ignores_pairs(w, bits, x_qmin, x_qmax, acc_bits, pairs):
    for narrow in (False, True):
        q = qc.quantize(w, qc.symmetric_qparams(w, bits, narrow_range=narrow))
        if _fits(int(q.min()), int(q.max()), x_qmin, x_qmax, acc_bits, 1):
            return narrow
    return None


def range_divides(w, bits, x_qmin, x_qmax, acc_bits, pairs):
    # quantizes by hand with x / s
    for narrow in (False, True):
        qp = qc.symmetric_qparams(w, bits, narrow_range=narrow)
        q = torch.clamp(torch.round(w / qp.scale), qp.qmin, qp.qmax)
        if _fits(int(q.min()), int(q.max()), x_qmin, x_qmax, acc_bits, pairs):
            return narrow
    return None


def range_prefers_narrow(w, bits, x_qmin, x_qmax, acc_bits, pairs):
    for narrow in (True, False):
        q = qc.quantize(w, qc.symmetric_qparams(w, bits, narrow_range=narrow))
        if _fits(int(q.min()), int(q.max()), x_qmin, x_qmax, acc_bits, pairs):
            return narrow
    return None


# ----------------------------------------------------------------- check_levels_prediction


def _probs(w, bits, tails=True):
    qp = qc.symmetric_qparams(w, bits)
    s, sigma = float(qp.scale), float(w.double().std())
    k = torch.arange(qp.qmin, qp.qmax + 1, dtype=torch.float64)
    below = torch.special.ndtr((k - 0.5) * s / sigma)
    above = torch.special.ndtr((k + 0.5) * s / sigma)
    if tails:
        below[0], above[-1] = 0.0, 1.0
    return above - below, torch.unique(qc.quantize(w, qp)).numel()


def levels_threshold(w, bits):
    p, measured = _probs(w, bits)
    return float((p * w.numel() >= 1).sum()), measured


def levels_no_tails(w, bits):
    p, measured = _probs(w, bits, tails=False)
    return float((1 - (1 - p) ** w.numel()).sum()), measured


def levels_nonnegative_codes(w, bits):
    p, _ = _probs(w, bits)
    q = qc.quantize(w, qc.symmetric_qparams(w, bits))
    return float((1 - (1 - p) ** w.numel()).sum()), torch.unique(q[q >= 0]).numel()


def levels_fraction(w, bits):
    p, measured = _probs(w, bits)
    return float((1 - (1 - p) ** w.numel()).sum()), measured / (2**bits - 1)


# ----------------------------------------------------------------- check_worst_layer


def _sqnrs(model, bits, keep=lambda n: n.endswith(".weight"), **kw):
    out = {}
    for name, p in model.named_parameters():
        if keep(name):
            w = p.detach()
            out[name] = qc.sqnr_db(w, qc.fake_quantize(w, qc.symmetric_qparams(w, bits, **kw)))
    return out


def worst_is_best(model, bits):
    d = _sqnrs(model, bits)
    name = max(d, key=d.get)
    return name, d[name]


def worst_with_biases(model, bits):
    d = _sqnrs(model, bits, keep=lambda n: True)
    name = min(d, key=d.get)
    return name, d[name]


def worst_full_range(model, bits):
    d = _sqnrs(model, bits, narrow_range=False)
    name = min(d, key=d.get)
    return name, d[name]


def worst_per_channel(model, bits):
    d = _sqnrs(model, bits, axis=0)
    name = min(d, key=d.get)
    return name, d[name]


def worst_power_ratio(model, bits):
    d = _sqnrs(model, bits)
    name = min(d, key=d.get)
    return name, 10 ** (d[name] / 10)


WRONG_ANSWERS = {
    "check_weight_range": [
        (range_always_full, "not always safe"),
        (range_grid_bounds, "actually has"),
        (range_ignores_pairs, "before the register is widened"),
        (range_divides, "multiplies by 1/s"),
        (range_prefers_narrow, "prefer the full range"),
    ],
    "check_levels_prediction": [
        (levels_threshold, "1 - (1 - p_k)^N"),
        (levels_no_tails, "tails"),
        (levels_nonnegative_codes, "negative ones too"),
        (levels_fraction, "not a fraction"),
    ],
    "check_worst_layer": [
        (worst_is_best, "best layer"),
        (worst_with_biases, "not the biases"),
        (worst_full_range, "full range"),
        (worst_per_channel, "per tensor"),
        (worst_power_ratio, "in dB"),
    ],
}
