"""Checkers for the exercises of ``03_symmetric.ipynb``."""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from ..affine import asymmetric_qparams, fake_quantize, quantize, symmetric_qparams
from ..metrics import sqnr_db
from ..models import digits_cnn
from ._core import (
    CheckFailed,
    call,
    checker,
    close,
    fmt_pair,
    hint_for,
    passed,
)


def _digits_weight(name: str) -> torch.Tensor:
    return digits_cnn().state_dict()[name].detach().clone()


# --------------------------------------------------------------------------- narrow or full

# Largest magnitudes R (float32) where -R * (1/s) and -R / s round to different codes on the
# full 8-bit grid (s = R / 127.5): the first reaches -128 only by multiplying, the second only
# by dividing (found by search; the checker verifies it).
_R_MUL_REACHES = 0.16601523756980896
_R_DIV_REACHES = 0.4161531329154968


def _trap_weight(r: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(31)
    rt = torch.tensor(r, dtype=torch.float32)
    w = (torch.rand(20, 10, generator=g) * 1.8 - 0.9) * rt
    w[4, 7] = -rt  # the largest magnitude, negative
    return w


def _sum_fits(w_lo: int, w_hi: int, x_lo: int, x_hi: int, acc_bits: int, pairs: int) -> bool:
    prods = [a * b for a in (w_lo, w_hi) for b in (x_lo, x_hi)]
    return (pairs * max(prods) <= 2 ** (acc_bits - 1) - 1
            and pairs * min(prods) >= -(2 ** (acc_bits - 1)))


def _codes_range(w: torch.Tensor, bits: int, narrow: bool, *, divide: bool = False):
    qp = symmetric_qparams(w, bits, narrow_range=narrow)
    if divide:
        q = torch.clamp(torch.round(w / qp.scale), qp.qmin, qp.qmax)
    else:
        q = quantize(w, qp)
    return int(q.min()), int(q.max())


def _range_choice(w, bits, x_lo, x_hi, acc_bits, pairs, *, divide=False, grid=False,
                  ignore_pairs=False, prefer_narrow=False):
    """The right decision, or (with a flag set) what a plausible mistake decides."""
    p = 1 if ignore_pairs else pairs
    q = 2 ** (bits - 1)
    full = (-q, q - 1) if grid else _codes_range(w, bits, False, divide=divide)
    narrow = (-(q - 1), q - 1) if grid else _codes_range(w, bits, True, divide=divide)
    if prefer_narrow and _sum_fits(*narrow, x_lo, x_hi, acc_bits, p):
        return True
    if _sum_fits(*full, x_lo, x_hi, acc_bits, p):
        return False
    if _sum_fits(*narrow, x_lo, x_hi, acc_bits, p):
        return True
    return None


def _range_cases():
    for r in (_R_MUL_REACHES, _R_DIV_REACHES):  # the two traps still split the two forms
        w = _trap_weight(r)
        if _codes_range(w, 8, False) == _codes_range(w, 8, False, divide=True):
            raise RuntimeError(f"nb03 checker: the trap at R = {r!r} no longer differs")

    def name(n):
        return f"the digits CNN's {n}"
    return [
        (name("conv2.weight") + " (its largest magnitude is negative), 8 bits, activations "
         "[-128, 127], pairs of products in int16", _digits_weight("conv2.weight"), 8,
         -128, 127, 16, 2),
        (name("fc1.weight") + " (its largest magnitude is positive), 8 bits, activations "
         "[-128, 127], pairs in int16", _digits_weight("fc1.weight"), 8, -128, 127, 16, 2),
        (name("fc2.weight") + ", 8 bits, activations [-127, 127], pairs in int16",
         _digits_weight("fc2.weight"), 8, -127, 127, 16, 2),
        (name("conv1.weight") + ", 8 bits, unsigned activations [0, 255], pairs in int16",
         _digits_weight("conv1.weight"), 8, 0, 255, 16, 2),
        (name("conv1.weight") + ", 8 bits, activations [0, 255], single products in int16",
         _digits_weight("conv1.weight"), 8, 0, 255, 16, 1),
        (name("fc2.weight") + ", 4 bits, activations [-128, 127], 4 products in int16",
         _digits_weight("fc2.weight"), 4, -128, 127, 16, 4),
        ("a tensor whose value -max|w| sits at -127.5 steps (it rounds to -128 only when "
         "multiplied by 1/s), activations [-128, 127], pairs in int16",
         _trap_weight(_R_MUL_REACHES), 8, -128, 127, 16, 2),
        ("a tensor whose value -max|w| sits at -127.5 steps (it rounds to -128 only when "
         "divided by s), activations [-128, 127], pairs in int16",
         _trap_weight(_R_DIV_REACHES), 8, -128, 127, 16, 2),
        (name("conv2.weight") + ", 8 bits, activations [0, 255], 4 products in int32",
         _digits_weight("conv2.weight"), 8, 0, 255, 32, 4),
    ]


def _says(v) -> str:
    return {True: "True (narrow)", False: "False (full)", None: "None (neither fits)"}[v]


_RANGE_MISTAKES = [
    ("quantize with qc.quantize (it multiplies by 1/s): dividing by s can round -max|w| to a "
     "different end code", {"divide": True}),
    ("look at the codes this tensor actually has on each grid (qc.quantize, then min and "
     "max): the full grid's -2^(b-1) is reached only by a value at -max|w|, and only if that "
     "value is negative", {"grid": True}),
    ("`pairs` products are added before the register is widened: multiply the extreme "
     "product by `pairs`", {"ignore_pairs": True}),
    ("prefer the full range (its step is smaller) whenever its sums fit",
     {"prefer_narrow": True}),
]


@checker
def check_weight_range(answer) -> None:
    """``answer(w, bits, x_qmin, x_qmax, acc_bits, pairs)`` -> False (full), True (narrow)
    or None."""
    cases = _range_cases()
    got_all = []
    for label, w, bits, x_lo, x_hi, acc, pairs in cases:
        what = f"choose_weight_range on {label}"
        got = call(answer, w.clone(), bits, x_lo, x_hi, acc, pairs, what=what)
        if isinstance(got, torch.Tensor) and got.numel() == 1 and got.dtype == torch.bool:
            got = bool(got)
        if got is not None and not isinstance(got, bool):
            raise CheckFailed(f"{what}: return True (narrow), False (full) or None, got "
                              f"{got!r}")
        got_all.append(got)
    want_all = [_range_choice(*c[1:]) for c in cases]
    if got_all != want_all:
        # a decision is one of three values: name the mistake that gives all the answers
        hint = ""
        if all(g is False for g in got_all):
            hint = ("the full range is not always safe: `pairs` products are added before "
                    "the register is widened, and their sum (the extreme product times "
                    "`pairs`) can leave it")
        for h, flags in _RANGE_MISTAKES:
            if not hint and got_all == [_range_choice(*c[1:], **flags) for c in cases]:
                hint = h
        hint = hint or ("take the extreme codes of each grid, the four corner products with "
                        "x_qmin and x_qmax, times `pairs`, and compare with the signed "
                        "acc_bits range")
        i = next(k for k, (g, w) in enumerate(zip(got_all, want_all, strict=True)) if g is not w)
        raise CheckFailed(f"choose_weight_range on {cases[i][0]}: expected {_says(want_all[i])}, "
                          f"got {_says(got_all[i])}. Hint: {hint}")
    passed(f"your choices match on {len(cases)} cases: digits-CNN weights with a negative or "
           "a positive peak, signed and unsigned activations, int16 pairs and int32 sums")


# --------------------------------------------------------------------------- levels used


def _ndtr(t: torch.Tensor) -> torch.Tensor:
    return torch.special.ndtr(t)


def _level_probs(w: torch.Tensor, bits: int, *, tails: bool = True,
                 sigma: float | None = None) -> tuple[torch.Tensor, int]:
    qp = symmetric_qparams(w, bits)
    s = float(qp.scale)
    sigma = float(w.double().std()) if sigma is None else sigma
    k = torch.arange(qp.qmin, qp.qmax + 1, dtype=torch.float64)
    lo, hi = _ndtr((k - 0.5) * s / sigma), _ndtr((k + 0.5) * s / sigma)
    if tails:
        lo[0], hi[-1] = 0.0, 1.0
    return hi - lo, w.numel()


def _predicted_levels(w: torch.Tensor, bits: int, **kw) -> float:
    p, n = _level_probs(w, bits, **kw)
    return float((1 - (1 - p) ** n).sum())


def _measured_levels(w: torch.Tensor, bits: int) -> int:
    return torch.unique(quantize(w, symmetric_qparams(w, bits))).numel()


def _levels_cases():
    g = torch.Generator().manual_seed(32)
    return [
        ("the digits CNN's conv1.weight (144 values), 8 bits", _digits_weight("conv1.weight"), 8),
        ("the digits CNN's fc1.weight (32,768 values), 8 bits", _digits_weight("fc1.weight"), 8),
        ("the digits CNN's conv2.weight, 4 bits", _digits_weight("conv2.weight"), 4),
        ("Gaussian weights (65,536 values), 6 bits", torch.randn(256, 256, generator=g) * 0.02,
         6),
    ]


@checker
def check_levels_prediction(answer) -> None:
    """``answer(w, bits)`` -> ``(predicted, measured)`` number of distinct codes."""
    shown = []
    for label, w, bits in _levels_cases():
        what = f"levels used by {label}"
        out = call(answer, w.clone(), bits, what=what)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise CheckFailed(f"{what}: return a pair (predicted, measured), got "
                              f"{type(out).__name__}")
        pred, meas = out
        try:
            pred, meas = float(pred), float(meas)
        except (TypeError, ValueError, RuntimeError):
            raise CheckFailed(f"{what}: return two numbers, got {out!r}") from None
        want_p, want_m = _predicted_levels(w, bits), _measured_levels(w, bits)
        n_codes = 2**bits - 1
        if not close(pred, want_p, rtol=1e-3):
            p, n = _level_probs(w, bits)
            mistakes = [
                ("a code is used with probability 1 - (1 - p_k)^N; counting the codes with "
                 "N p_k >= 1 is not the expected number", float((p * n >= 1).sum())),
                ("the end codes +-q_max also collect every value beyond them: integrate the "
                 "Gaussian's tails into the first and last p_k",
                 _predicted_levels(w, bits, tails=False)),
                ("the sum of N p_k is N, the number of values, not of distinct codes",
                 float(n)),
                ("sigma is the standard deviation w.std(), not the variance",
                 _predicted_levels(w, bits, sigma=float(w.double().var()))),
                ("that is the measured count: predict it from the Gaussian model", want_m),
            ]
            hint = hint_for(pred, mistakes, rtol=1e-3, want=want_p,
                            default="sum over the codes k of 1 - (1 - p_k)^N, p_k the "
                                    "Gaussian's probability of the bin [(k - 1/2) s, "
                                    "(k + 1/2) s], the end bins open")
            g, e = fmt_pair(pred, want_p)
            raise CheckFailed(f"{what}, predicted: expected {e}, got {g}. Hint: {hint}")
        if meas != want_m:
            q = quantize(w, symmetric_qparams(w, bits))
            mistakes = [
                ("count the distinct codes, the negative ones too",
                 float(torch.unique(q[q >= 0]).numel())),
                ("return the count of distinct codes, not a fraction", want_m / n_codes),
                ("count distinct integer codes after quantizing, not distinct float values",
                 float(torch.unique(w).numel())),
            ]
            hint = hint_for(meas, mistakes, want=float(want_m),
                            default="torch.unique(qc.quantize(w, qc.symmetric_qparams(w, "
                                    "bits))).numel()")
            g, e = fmt_pair(meas, want_m)
            raise CheckFailed(f"{what}, measured: expected {e}, got {g}. Hint: {hint}")
        shown.append(f"{label.split(' (')[0].split(',')[0]} at {bits} bits: predicted "
                     f"{want_p:.1f}, measured {want_m} of {n_codes}")
    passed("your predictions and counts match. " + "; ".join(shown))


# --------------------------------------------------------------------------- worst layer


def _synthetic_model() -> nn.Module:
    g = torch.Generator().manual_seed(33)
    model = nn.Sequential(nn.Linear(16, 1024), nn.ReLU(), nn.Linear(1024, 10))
    with torch.no_grad():
        for layer in (model[0], model[2]):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 0.1)
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=g) * 0.1)
        model[2].weight[5, 7] = 1.0   # an outlier weight: 2.weight is the worst weight
        model[0].bias[3] = 2.0        # a larger outlier in a long bias (not a weight)
    return model.eval()


def _layer_sqnrs(model: nn.Module, bits: int, *, how: str = "sym", biases: bool = False):
    out = {}
    for name, p in model.named_parameters():
        if not name.endswith(".weight") and not biases:
            continue
        w = p.detach()
        if how == "sym":
            qp = symmetric_qparams(w, bits)
        elif how == "full":
            qp = symmetric_qparams(w, bits, narrow_range=False)
        elif how == "asym":
            qp = asymmetric_qparams(w, bits)
        else:
            qp = symmetric_qparams(w, bits, axis=0)
        out[name] = sqnr_db(w, fake_quantize(w, qp))
    return out


def _worst(d: dict[str, float]) -> tuple[str, float]:
    name = min(d, key=d.__getitem__)
    return name, d[name]


def _layer_cases():
    return [
        ("the digits CNN at 4 bits", digits_cnn, 4),
        ("the digits CNN at 8 bits", digits_cnn, 8),
        ("a 2-layer MLP (nn.Sequential) with an outlier weight, at 4 bits", _synthetic_model, 4),
    ]


@checker
def check_worst_layer(answer) -> None:
    """``answer(model, bits)`` -> ``(parameter name, SQNR in dB)`` of the worst weight."""
    shown = []
    for label, make, bits in _layer_cases():
        model = make()
        what = f"worst_layer on {label}"
        out = call(answer, model, bits, what=what)
        if not isinstance(out, (tuple, list)) or len(out) != 2 or not isinstance(out[0], str):
            raise CheckFailed(f"{what}: return a pair (name, sqnr_db) with the parameter's "
                              f"name as a string, got {out!r}")
        name, value = out
        if not isinstance(value, (numbers.Real, torch.Tensor)) or isinstance(value, bool):
            raise CheckFailed(f"{what}: the SQNR must be a number, got {value!r}")
        value = float(value)
        sq = _layer_sqnrs(model, bits)
        want_name, want_db = _worst(sq)
        ok_name = name in (want_name, want_name.removesuffix(".weight"))
        if not (ok_name and math.isclose(value, want_db, abs_tol=0.01)):
            mistakes = [
                ("you returned the best layer; the worst one has the lowest SQNR",
                 max(sq.items(), key=lambda kv: kv[1])),
                ("quantize the weights only (parameters named '.weight'), not the biases",
                 _worst(_layer_sqnrs(model, bits, biases=True))),
                ("that is the full range; use the narrow range of qc.symmetric_qparams "
                 "(narrow_range=True, the default)", _worst(_layer_sqnrs(model, bits, how="full"))),
                ("that is an asymmetric grid; use qc.symmetric_qparams",
                 _worst(_layer_sqnrs(model, bits, how="asym"))),
                ("one scale per tensor (axis=None), not per output channel",
                 _worst(_layer_sqnrs(model, bits, how="axis0"))),
            ]
            hint = ""
            for h, (m_name, m_db) in mistakes:
                if m_name == name and math.isclose(value, m_db, abs_tol=0.01) \
                        and (m_name, m_db) != (want_name, want_db):
                    hint = h
                    break
            if not hint and ok_name and math.isclose(value, 10 ** (want_db / 10), rel_tol=1e-3):
                hint = "report the SQNR in dB (qc.sqnr_db), not as a power ratio"
            hint = hint or ("for each '.weight' parameter: qc.symmetric_qparams(w, bits), "
                            "qc.fake_quantize, qc.sqnr_db; return the name and value of the "
                            "lowest")
            g, e = fmt_pair(value, want_db)
            raise CheckFailed(f"{what}: expected ({want_name!r}, {e} dB), got ({name!r}, {g}). "
                              f"Hint: {hint}")
        shown.append(f"{label}: {want_name}, {want_db:.1f} dB")
    passed("your worst layers match. " + "; ".join(shown))
