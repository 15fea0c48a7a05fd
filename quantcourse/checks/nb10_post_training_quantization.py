"""Checkers for the exercises of ``10_post_training_quantization.ipynb``."""

from __future__ import annotations

import functools
import itertools
import math

import torch

from ..affine import fake_quantize, symmetric_qparams
from ..data import digits_data
from ..hardware import INT16_MAX, INT16_MIN
from ..models import digits_cnn
from ..nn import quantizable_layers
from ..ptq import quantize_static
from ..qconfig import LayerConfig, QuantConfig, QuantSpec
from ._core import CheckFailed, call, checker, hint_for, one_number, passed

# --------------------------------------------------------------------------- predicted SQNR


def _predicted_sqnr(w: torch.Tensor, bits: int) -> float:
    qmax = 2 ** (bits - 1) - 1
    w = w.double()
    return 10 * math.log10(12 * qmax**2 * float((w**2).mean()) / float(w.abs().max()) ** 2)


def _sqnr_cases() -> list[tuple[str, torch.Tensor, int]]:
    g = torch.Generator().manual_seed(10)
    gauss = torch.randn(256, 64, generator=g)
    outlier = gauss.clone()
    outlier[3, 7] = 60.0
    laplace = torch.distributions.Laplace(0.0, 1.0).sample((128, 32)) * 0.02
    # values on the grid itself: the measured error is 0, the prediction is not
    on_grid = torch.tensor([-3.0, -1.0, 0.0, 1.0, 2.0, 3.0]).repeat(20)
    return [("a Gaussian weight, 8 bits", gauss, 8), ("the same with one outlier, 8 bits",
            outlier, 8), ("a Laplace weight, 4 bits", laplace, 4),
            ("a weight whose values lie on the 2-bit grid", on_grid, 2),
            ("a Gaussian weight, 6 bits", gauss, 6)]


@checker
def check_weight_sqnr_prediction(answer) -> None:
    """``answer(w, bits)`` -> the per-tensor symmetric SQNR predicted from ``max|w|`` and
    the mean square: rounding noise ``s^2/12`` with ``s = max|w| / (2^(b-1) - 1)``."""
    for what, w, bits in _sqnr_cases():
        what = f"predicted SQNR (dB) for {what}"
        got = float(one_number(call(answer, w.clone(), bits, what=what), what))
        want = _predicted_sqnr(w, bits)
        if math.isfinite(got) and abs(got - want) <= 1e-3:
            continue
        qmax, ms, mx = 2 ** (bits - 1) - 1, float((w.double() ** 2).mean()), float(w.abs().max())
        measured = 10 * math.log10(
            ms / float(((fake_quantize(w, symmetric_qparams(w, bits)) - w).double() ** 2).mean())
        ) if bits > 2 else math.inf
        hint = hint_for(got, [
            ("the grid of a symmetric b-bit weight reaches 2^(b-1) - 1, not 2^b - 1",
             10 * math.log10(12 * (2**bits - 1) ** 2 * ms / mx**2)),
            ("the rounding noise of a step s has variance s^2 / 12: keep the factor 12",
             10 * math.log10(qmax**2 * ms / mx**2)),
            ("SQNR compares powers: 10 log10 of a ratio of mean squares, not 20 log10",
             20 * math.log10(12 * qmax**2 * ms / mx**2)),
            ("predict from max|w| and mean(w^2); do not quantize and measure", measured),
        ], atol=1e-3, default="10 log10(12 qmax^2 mean(w^2) / max|w|^2) with "
                            "qmax = 2^(b-1) - 1")
        raise CheckFailed(f"{what}: expected {want:.4f}, got {got:.4f}. Hint: {hint}")
    passed("your prediction matches 10 log10(12 qmax^2 mean(w^2) / max|w|^2) on five weights")


# --------------------------------------------------------------------------- AVX2 safe range


def _safe_qmax(w: torch.Tensor) -> int:
    w = w.to(torch.int64)
    if w.shape[1] % 2:
        w = torch.nn.functional.pad(w, (0, 1))
    pairs = w.reshape(w.shape[0], -1, 2)
    pos = pairs.clamp(min=0).sum(-1).max().item()
    neg = (-pairs.clamp(max=0)).sum(-1).max().item()
    limits = [255]
    if pos:
        limits.append(INT16_MAX // pos)
    if neg:
        limits.append(-INT16_MIN // neg)
    return int(min(limits))


def _qmax_cases() -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    full = torch.randint(-127, 128, (32, 64), generator=g, dtype=torch.int8)
    small = torch.randint(-40, 41, (16, 33), generator=g, dtype=torch.int8)
    mixed = torch.tensor([[127, -128, 5, 3], [-90, -60, 100, 20]], dtype=torch.int8)
    worst = torch.tensor([[-128, -128, 0, 1]], dtype=torch.int8)
    return [("random int8 weights in [-127, 127]", full), ("small weights, odd K = 33", small),
            ("mixed-sign pairs", mixed), ("the pair (-128, -128)", worst)]


@checker
def check_safe_activation_qmax(answer) -> None:
    """``answer(w_codes)`` -> the largest activation code ``qmax <= 255`` for which no pair sum
    ``a[k] w[n, k] + a[k+1] w[n, k+1]`` (``a`` in ``[0, qmax]``) leaves int16."""
    for what, w in _qmax_cases():
        what = f"largest safe activation qmax for {what}"
        got = call(answer, w.clone(), what=what)
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if not isinstance(got, int) or isinstance(got, bool):
            if isinstance(got, float) and got.is_integer():
                got = int(got)
            else:
                raise CheckFailed(f"{what}: expected an integer code, got {got!r}")
        want = _safe_qmax(w)
        if got == want:
            continue
        w64 = w.to(torch.int64)
        wp = torch.nn.functional.pad(w64, (0, w64.shape[1] % 2)).reshape(w.shape[0], -1, 2)
        hint = hint_for(got, [
            ("int16 reaches -32768 on the negative side but only 32767 on the positive one",
             min(255, INT16_MAX // max(1, int((-wp.clamp(max=0)).sum(-1).max())),
                 INT16_MAX // max(1, int(wp.clamp(min=0).sum(-1).max())))),
            ("8 bits are not always unsafe: 127 is only the worst case of int8 weights; "
             "compute the bound from these weights", 127),
            ("the pair's two products add before saturating: bound the sum of a pair, not "
             "one product", min(255, INT16_MAX // max(1, int(w64.abs().max())))),
            ("a pair of mixed signs partly cancels: the largest positive sum comes from the "
             "positive weights of the pair, the most negative from its negative ones",
             min(255, INT16_MAX // max(1, int(wp.abs().sum(-1).max())))),
        ], want=want, default="pairs are (0, 1), (2, 3), ... along each row's K inputs (an "
           "odd K leaves the last alone); qmax = min(255, 32767 // largest positive pair sum, "
           "32768 // largest negative pair sum)")
        raise CheckFailed(f"{what}: expected {want}, got {got}. Hint: {hint}")
    passed("your bound keeps every u8*s8 pair sum inside int16 and is the largest that does")


# --------------------------------------------------------------------------- layers in float

_FLOAT_CASE = LayerConfig(QuantSpec(3), QuantSpec(3, symmetric=False, granularity="tensor"))


def _agreements(model, config, calibration, images):
    with torch.no_grad():
        ref = model(images).argmax(1)
    names = list(quantizable_layers(model))
    out = {}
    for k in range(len(names) + 1):
        for keep in itertools.combinations(names, k):
            q = quantize_static(model, QuantConfig(config, by_name=dict.fromkeys(keep)),
                                calibration)
            with torch.no_grad():
                out[frozenset(keep)] = float((q(images).argmax(1) == ref).double().mean())
    return out


def _float_case_inputs() -> tuple[list[torch.Tensor], torch.Tensor]:
    """Two calibration batches of 32 training images and the 360 test images (fresh copies)."""
    data = digits_data()
    return [data.x_train[i * 32:(i + 1) * 32] for i in range(2)], data.x_test


@functools.lru_cache(maxsize=1)
def _agreement_table() -> dict[frozenset, float]:
    # every subset's agreement, once per process (the inputs are deterministic)
    return _agreements(digits_cnn(), _FLOAT_CASE, *_float_case_inputs())


@checker
def check_float_layers(answer) -> None:
    """``answer(model, layer_config, calibration, images, min_agreement)`` -> the fewest layer
    names to keep in float so that static PTQ agrees with the float model on at least
    ``min_agreement`` of ``images``."""
    model = digits_cnn()
    calibration, images = _float_case_inputs()
    table = None
    for target in (0.97, 0.99):
        what = f"layers kept in float for agreement >= {target}"
        state = {k: v.clone() for k, v in model.state_dict().items()}
        got = call(answer, model, _FLOAT_CASE, calibration, images, target, what=what)
        after = model.state_dict()
        if set(after) != set(state) or any(not torch.equal(v, after[k])
                                           for k, v in state.items()):
            raise CheckFailed(f"{what}: your function changed the float model; quantize copies "
                              "(inplace=False, the default)")
        if isinstance(got, str) or not hasattr(got, "__iter__"):
            raise CheckFailed(f"{what}: expected a list or set of layer names, got {got!r}")
        got = frozenset(got)
        if table is None:  # after the first answer, so that a stub fails at once
            table = _agreement_table()
        if got not in table:
            raise CheckFailed(f"{what}: {sorted(got)} are not all quantizable layers of the "
                              f"model ({', '.join(quantizable_layers(model))})")
        best = min(len(k) for k, v in table.items() if v >= target)
        if table[got] < target:
            raise CheckFailed(f"{what}: with {sorted(got)} in float the agreement is "
                              f"{table[got]:.4f}, below {target}. Hint: measure every choice "
                              "you keep, and keep the first that reaches the target")
        if len(got) > best:
            raise CheckFailed(f"{what}: {sorted(got)} reaches the target, but {best} layer(s) "
                              "in float suffice. Hint: try the sets of each size in turn, "
                              "smallest first")
    passed("your choice reaches each target with the fewest layers in float")
