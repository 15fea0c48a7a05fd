"""Plausible wrong answers for the checkers of 10_post_training_quantization.ipynb."""

import itertools
import math

import torch

import quantcourse as qc

# ----------------------------------------------------------------- check_weight_sqnr_prediction


def _ms_max(w):
    w = w.double()
    return float((w**2).mean()), float(w.abs().max())


def sqnr_unsigned_qmax(w, bits):
    ms, mx = _ms_max(w)
    return 10 * math.log10(12 * (2**bits - 1) ** 2 * ms / mx**2)


def sqnr_without_twelve(w, bits):
    ms, mx = _ms_max(w)
    return 10 * math.log10((2 ** (bits - 1) - 1) ** 2 * ms / mx**2)


def sqnr_twenty_log(w, bits):
    ms, mx = _ms_max(w)
    return 20 * math.log10(12 * (2 ** (bits - 1) - 1) ** 2 * ms / mx**2)


def sqnr_measured(w, bits):
    return qc.sqnr_db(w, qc.fake_quantize(w, qc.symmetric_qparams(w, bits)))


# ----------------------------------------------------------------- check_safe_activation_qmax


def _pairs(w):
    w = w.to(torch.int64)
    return torch.nn.functional.pad(w, (0, w.shape[1] % 2)).reshape(w.shape[0], -1, 2)


def qmax_always_seven_bits(w):
    return 127


def qmax_one_product(w):
    return min(255, 32767 // int(w.to(torch.int64).abs().max()))


def qmax_abs_pair_sums(w):
    return min(255, 32767 // int(_pairs(w).abs().sum(-1).max()))


def qmax_int16_max_both_sides(w):
    p = _pairs(w)
    return min(255, 32767 // int(p.clamp(min=0).sum(-1).max()),
               32767 // int((-p.clamp(max=0)).sum(-1).max()))


# ----------------------------------------------------------------- check_float_layers


def _agreement(model, config, calibration, images, keep):
    q = qc.quantize_static(model, qc.QuantConfig(config, by_name=dict.fromkeys(keep)),
                           calibration)
    with torch.no_grad():
        return float((q(images).argmax(1) == model(images).argmax(1)).double().mean())


def float_layers_none(model, config, calibration, images, min_agreement):
    return []


def float_layers_all(model, config, calibration, images, min_agreement):
    return list(qc.quantizable_layers(model))


def float_layers_largest_first(model, config, calibration, images, min_agreement):
    # keeps the layers with the most weights in float until the target is met: not the fewest
    names = sorted(qc.quantizable_layers(model),
                   key=lambda n: -qc.quantizable_layers(model)[n].weight.numel())
    for k in range(len(names) + 1):
        if _agreement(model, config, calibration, images, names[:k]) >= min_agreement:
            return names[:k]
    return names


def float_layers_inplace(model, config, calibration, images, min_agreement):
    # quantizes the model itself while searching
    names = list(qc.quantizable_layers(model))
    for k in range(len(names) + 1):
        for keep in itertools.combinations(names, k):
            if _agreement(model, config, calibration, images, keep) >= min_agreement:
                qc.quantize_static(model, qc.QuantConfig(config), calibration, inplace=True)
                return list(keep)
    return names


WRONG_ANSWERS = {
    "check_weight_sqnr_prediction": [
        (sqnr_unsigned_qmax, "2^(b-1) - 1"),
        (sqnr_without_twelve, "s^2 / 12"),
        (sqnr_twenty_log, "not 20 log10"),
        (sqnr_measured, "do not quantize and measure"),
    ],
    "check_safe_activation_qmax": [
        (qmax_always_seven_bits, "compute the bound from these weights"),
        (qmax_one_product, "bound the sum of a pair"),
        (qmax_abs_pair_sums, "mixed signs"),
        (qmax_int16_max_both_sides, "-32768"),
    ],
    "check_float_layers": [
        (float_layers_none, "below"),
        (float_layers_all, "suffice"),
        (float_layers_largest_first, "suffice"),
        (float_layers_inplace, "changed the float model"),
    ],
}
