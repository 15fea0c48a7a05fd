"""Checkers for the exercises of ``04_asymmetric.ipynb``."""

from __future__ import annotations

import functools
import math

import torch

from ..affine import asymmetric_qparams, dequantize, fake_quantize, quantize, symmetric_qparams
from ..data import digits_data
from ..metrics import mse, sqnr_db
from ..models import digits_cnn
from ..nn import capture_inputs, quantizable_layers
from ._core import (
    CheckFailed,
    as_codes,
    as_tensor,
    call,
    checker,
    fmt_pair,
    hint_for,
    one_number,
    passed,
)

# ---------------------------------------------------------------- predict, then measure


@functools.lru_cache(maxsize=1)
def _cnn_relu_outputs() -> dict[str, torch.Tensor]:
    """The ReLU outputs of the digits CNN on 120 test images: what conv2 and fc2 read."""
    cnn = digits_cnn().eval()
    x = digits_data().x_test[:120]
    seen = capture_inputs(cnn, lambda: cnn(x), layers=["conv2", "fc2"])
    return {"conv1's ReLU output (conv2's input)": seen["conv2"],
            "fc1's ReLU output (fc2's input)": seen["fc2"]}


def _ratio_cases() -> list[tuple[str, torch.Tensor, int]]:
    g = torch.Generator().manual_seed(40)
    relu = _cnn_relu_outputs()
    names = list(relu)
    z = torch.randn(4000, generator=g)
    return [
        (f"the digits CNN's {names[0]}", relu[names[0]], 8),
        (f"the digits CNN's {names[0]}", relu[names[0]], 4),
        (f"the digits CNN's {names[1]}", relu[names[1]], 4),
        ("a GELU output (a small negative tail)", torch.nn.functional.gelu(2 * z), 8),
        ("zero-centred Gaussian weights", 0.02 * z, 4),
        ("all-positive values in [0.5, 3]", 0.5 + 2.5 * torch.rand(3000, generator=g), 8),
        ("a skewed tensor in about [-1, 3]", torch.relu(z + 1) * 1.5 - 1, 3),
    ]


def _steps(x: torch.Tensor, bits: int, *, widen: bool = True, levels: bool = False):
    lo, hi = float(x.min()), float(x.max())
    if widen:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    amax = max(abs(lo), abs(hi)) if widen else float(x.abs().max())
    n_sym = 2 ** (bits - 1) if levels else 2 ** (bits - 1) - 1
    n_asym = 2**bits if levels else 2**bits - 1
    return amax / n_sym, (hi - lo) / n_asym


def _measured(x: torch.Tensor, bits: int) -> float:
    errs = []
    for qp in (symmetric_qparams(x, bits), asymmetric_qparams(x, bits)):
        errs.append(mse(x, dequantize(quantize(x, qp), qp)))
    return errs[0] / errs[1]


def _predicted_hint(got: float, x: torch.Tensor, bits: int, want: float) -> str:
    s_sym, s_asym = _steps(x, bits)
    relu = ((2**bits - 1) / (2 ** (bits - 1) - 1)) ** 2
    s_sym_l, s_asym_l = _steps(x, bits, levels=True)
    s_sym_n, s_asym_n = _steps(x, bits, widen=False)
    return hint_for(got, [
        ("the factor (2^b - 1)^2 / (2^(b-1) - 1)^2 holds for data in [0, max] only; in general "
         "predict from the two steps: s_sym = max|x| / (2^(b-1) - 1), "
         "s_asym = (max(x_max, 0) - min(x_min, 0)) / (2^b - 1)", relu),
        ("the MSE of a round-to-nearest grid is about s^2 / 12: square the ratio of the steps",
         s_sym / s_asym),
        ("sym over asym: divide the symmetric MSE (or step squared) by the asymmetric one; a "
         "ratio above 1 means asymmetric wins", s_asym**2 / s_sym**2),
        ("count steps, not levels: 2^b - 1 steps on the asymmetric grid and 2^(b-1) - 1 on "
         "each side of the narrow symmetric one", (s_sym_l / s_asym_l) ** 2),
        ("widen the asymmetric range to include 0 first, as qc.asymmetric_qparams does: "
         "[min(x_min, 0), max(x_max, 0)]", (s_sym_n / s_asym_n) ** 2),
    ], rtol=1e-4, want=want, default="predicted = (s_sym / s_asym)^2 with s_sym = max|x| / "
       "(2^(b-1) - 1) and s_asym = (max(x_max, 0) - min(x_min, 0)) / (2^b - 1)")


def _pair(got, what: str) -> tuple[float, float]:
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise CheckFailed(f"{what}: expected a pair (predicted, measured), got "
                          f"{type(got).__name__}")
    return (float(one_number(got[0], f"{what}: predicted")),
            float(one_number(got[1], f"{what}: measured")))


@checker
def check_sym_vs_asym(answer) -> None:
    """``answer(x, bits)`` -> ``(predicted, measured)`` MSE ratio, symmetric over asymmetric."""
    lines = []
    for name, x, bits in _ratio_cases():
        what = f"sym_vs_asym on {name} (bits={bits})"
        pred, meas = _pair(call(answer, x.clone(), bits, what=what), what)
        s_sym, s_asym = _steps(x, bits)
        want_pred, want_meas = (s_sym / s_asym) ** 2, _measured(x, bits)
        if not math.isclose(pred, want_pred, rel_tol=1e-4):
            g, w = fmt_pair(pred, want_pred)
            raise CheckFailed(f"{what}: predicted ratio expected {w}, got {g}. Hint: "
                              + _predicted_hint(pred, x, bits, want_pred))
        if not math.isclose(meas, want_meas, rel_tol=1e-4):
            g, w = fmt_pair(meas, want_meas)
            hint = hint_for(meas, [
                ("measured = MSE(symmetric) / MSE(asymmetric), not the other way round",
                 1 / want_meas),
                ("that is the prediction: measure the two MSEs with qc.symmetric_qparams and "
                 "qc.asymmetric_qparams (per tensor), qc.quantize, qc.dequantize, qc.mse",
                 want_pred),
            ], rtol=1e-4, want=want_meas, default="quantize and dequantize x with "
               "qc.symmetric_qparams(x, bits) and qc.asymmetric_qparams(x, bits), then "
               "divide qc.mse of the first by qc.mse of the second")
            raise CheckFailed(f"{what}: measured ratio expected {w}, got {g}. Hint: {hint}")
        lines.append((name, bits, want_pred, want_meas))
    relu8 = lines[0]
    gelu = lines[3]
    passed(f"predictions and measurements agree with the package on {len(lines)} tensors. "
           f"On the CNN's ReLU output at 8 bits asymmetric wins by {relu8[3]:.2f}x in MSE "
           f"(predicted {relu8[2]:.2f}x); on the GELU output only by {gelu[3]:.2f}x, since its "
           "negative tail takes part of the asymmetric range")


# ---------------------------------------------------------------- folding zero points into the bias


def _fold_cases() -> list[tuple[str, torch.Tensor, int, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(41)
    fc2 = digits_cnn().fc2.weight.detach()
    qp = asymmetric_qparams(fc2, 8, axis=0)                     # per-channel, uint8
    q_fc2 = quantize(fc2, qp)
    z_fc2 = qp.zero_point.reshape(-1).to(torch.uint8)
    b_fc2 = torch.randint(-3000, 3000, (fc2.shape[0],), generator=g, dtype=torch.int32)

    def u8(shape):
        return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)

    def bias(n):
        return torch.randint(-5000, 5000, (n,), generator=g, dtype=torch.int32)

    return [
        ("uint8 weights (5 x 12), per-channel zero points", u8((5, 12)), -97, u8((5,)), bias(5)),
        ("uint8 weights (3 x 7), z_X = 200", u8((3, 7)), 200, u8((3,)), bias(3)),
        ("int8 symmetric weights (z_W = 0), 4 x 9",
         torch.randint(-127, 128, (4, 9), generator=g, dtype=torch.int8), 37,
         torch.zeros(4, dtype=torch.int8), bias(4)),
        ("symmetric activations (z_X = 0), 6 x 3", u8((6, 3)), 0, u8((6,)), bias(6)),
        ("one input feature (K = 1)", u8((2, 1)), -128, u8((2,)), bias(2)),
        ("the digits CNN's fc2, asymmetric per channel (uint8)", q_fc2, -128, z_fc2, b_fc2),
    ]


def _fold_reference(q_w, z_x, z_w, b):
    """Brute force: the accumulator of an all-zero input row, term by term in int64."""
    centred = q_w.to(torch.int64) - z_w.to(torch.int64)[:, None]
    return b.to(torch.int64) + ((0 - z_x) * centred).sum(dim=1)


@checker
def check_fold_zero_points(answer) -> None:
    """``answer(Q_W, z_X, z_W, bias_q)`` -> the folded bias, one integer per output."""
    g = torch.Generator().manual_seed(42)
    cases = _fold_cases()
    for name, q_w, z_x, z_w, b in cases:
        n, k = q_w.shape
        what = f"fold_zero_points on {name}"
        got = call(answer, q_w.clone(), z_x, z_w.clone(), b.clone(), what=what)
        want = _fold_reference(q_w, z_x, z_w, b)
        got_t = as_tensor(got, what)
        if got_t.shape != want.shape:
            hint = ("one folded bias per output feature: sum Q_W over its in-features "
                    "(dim=1), which gives shape (N,)")
            raise CheckFailed(f"{what}: expected shape {tuple(want.shape)}, got "
                              f"{tuple(got_t.shape)}. Hint: {hint}")
        got_c = as_codes(got_t, what)
        if torch.equal(got_c, want):
            # the folded bias must reproduce the layer on real inputs, too
            q_x = torch.randint(0, 256, (3, k), generator=g).to(torch.int64)
            direct = ((q_x - z_x) @ (q_w.to(torch.int64) - z_w.to(torch.int64)[:, None]).T
                      + b.to(torch.int64))
            fast = (q_x @ q_w.to(torch.int64).T - q_x.sum(1, keepdim=True)
                    * z_w.to(torch.int64)[None, :] + got_c[None, :])
            if not torch.equal(direct, fast):
                raise CheckFailed(f"{what}: the folded bias does not reproduce the layer")
            continue
        qw64, zw64, b64 = q_w.to(torch.int64), z_w.to(torch.int64), b.to(torch.int64)
        rows = qw64.sum(dim=1)
        wraps = ("arithmetic on uint8 / int8 tensors wraps around (modulo 256): convert Q_W and "
                 "z_W to int64 (or int32) before multiplying")
        hint = hint_for(got_c, [
            ("you left out the constant term K * z_X * z_{W,j} (one per output j)",
             b64 - z_x * rows),
            ("check the signs: folded_j = bias_j - z_X * sum_k Q_W[j, k] "
             "+ K * z_X * z_{W,j}", b64 + z_x * rows - k * z_x * zw64),
            ("add the bias itself: the folded bias replaces bias_q", want - b64),
            ("K is the number of in-features, Q_W.shape[1]", b64 - z_x * rows + n * z_x * zw64),
            (wraps, b64 - z_x * rows + (k * z_x * z_w).to(torch.int64)),
            (wraps, b64 - (z_x * q_w).to(torch.int64).sum(dim=1) + k * z_x * zw64),
        ], want=want, default="folded_j = bias_j - z_X * sum_k Q_W[j, k] + K * z_X * z_{W,j}, "
           "in int64")
        bad = int((got_c != want).nonzero()[0])
        raise CheckFailed(f"{what}: {int((got_c != want).sum())} of {n} folded bias value(s) "
                          f"differ; at output {bad} expected {int(want[bad])}, got "
                          f"{int(got_c[bad])}. Hint: {hint}")
    passed(f"the folded biases are right on {len(cases)} layers (uint8 and int8 codes, "
           "symmetric weights, symmetric activations, K = 1, the CNN's fc2): only the row sums "
           "of Q_X are left for run time")


# ---------------------------------------------------------------- asymmetric weights, per layer


class _Skewed(torch.nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(43)
        self.centred = torch.nn.Linear(64, 32)
        self.shifted = torch.nn.Linear(32, 16)
        self.conv = torch.nn.Conv2d(3, 8, 3)
        with torch.no_grad():
            self.centred.weight.copy_(0.05 * torch.randn(32, 64, generator=g))
            self.shifted.weight.copy_(0.02 + 0.05 * torch.rand(16, 32, generator=g))
            self.conv.weight.copy_(0.1 * torch.randn(8, 3, 3, 3, generator=g))


def _gains(model, bits: int, axis: int | None = 0) -> dict[str, float]:
    out = {}
    for name, layer in quantizable_layers(model).items():
        w = layer.weight.detach()
        w_s = fake_quantize(w, symmetric_qparams(w, bits, axis=axis))
        w_a = fake_quantize(w, asymmetric_qparams(w, bits, axis=axis))
        out[name] = sqnr_db(w, w_a) - sqnr_db(w, w_s)
    return out


def _ratios(model, bits: int) -> dict[str, float]:
    out = {}
    for name, layer in quantizable_layers(model).items():
        w = layer.weight.detach()
        w_s = fake_quantize(w, symmetric_qparams(w, bits, axis=0))
        w_a = fake_quantize(w, asymmetric_qparams(w, bits, axis=0))
        out[name] = mse(w, w_s) / mse(w, w_a)
    return out


def _as_names(got, what: str) -> set[str]:
    if isinstance(got, dict):
        got = [k for k, v in got.items() if v]
    if isinstance(got, str) or not isinstance(got, (set, list, tuple, frozenset)):
        raise CheckFailed(f"{what}: expected a set (or list) of layer names, got "
                          f"{type(got).__name__}")
    if not all(isinstance(n, str) for n in got):
        raise CheckFailed(f"{what}: expected layer names (str), as qc.quantizable_layers "
                          "gives them")
    return set(got)


@checker
def check_asym_weight_layers(answer) -> None:
    """``answer(model, bits, min_gain_db)`` -> names of the layers worth asymmetric weights."""
    cnn = digits_cnn().eval()
    cases = [("the digits CNN", cnn, 8, 1.0), ("the digits CNN", cnn, 4, 1.6),
             ("the digits CNN", cnn, 3, 2.1), ("a model with one shifted layer", _Skewed(), 4, 3.0)]
    got_all = []
    for label, model, bits, thr in cases:
        what = f"asym_weight_layers({label}, bits={bits}, min_gain_db={thr})"
        got_all.append(_as_names(call(answer, model, bits, thr, what=what), what))
    wants = [{n for n, v in _gains(m, b).items() if v >= t} for _, m, b, t in cases]
    if got_all == wants:
        g8 = _gains(cnn, 8)
    else:
        variants = [
            ("one scale and zero point per output channel (axis=0), not one per tensor",
             lambda: [{n for n, v in _gains(m, b, axis=None).items() if v >= t}
                      for _, m, b, t in cases]),
            ("the gain is SQNR(asymmetric) - SQNR(symmetric): positive when asymmetric is "
             "better", lambda: [{n for n, v in _gains(m, b).items() if -v >= t}
                                for _, m, b, t in cases]),
            ("min_gain_db is in decibels: compare 10 log10 of the MSE ratio (or the SQNR "
             "difference), not the ratio itself",
             lambda: [{n for n, v in _ratios(m, b).items() if v >= t} for _, m, b, t in cases]),
        ]
        hint = next((h for h, v in variants if v() == got_all),
                    "for each layer of qc.quantizable_layers(model), fake-quantize the weight per "
                    "output channel both ways and keep the layer if SQNR(asymmetric) - "
                    "SQNR(symmetric) >= min_gain_db")
        i = next(i for i, (g, w) in enumerate(zip(got_all, wants, strict=True)) if g != w)
        label, model, bits, thr = cases[i]
        detail = ", ".join(f"{n} {v:+.2f} dB" for n, v in _gains(model, bits).items())
        raise CheckFailed(f"asym_weight_layers({label}, bits={bits}, min_gain_db={thr}): "
                          f"expected {sorted(wants[i])}, got {sorted(got_all[i])} (gains: "
                          f"{detail}). Hint: {hint}")
    passed("your choices match on 4 decisions. On the digits CNN at 8 bits the per-channel "
           "asymmetric gain is " + ", ".join(f"{n} {v:+.2f} dB" for n, v in g8.items())
           + ", against 0.1 dB on section 4's Gaussian matrix with one scale per tensor")
