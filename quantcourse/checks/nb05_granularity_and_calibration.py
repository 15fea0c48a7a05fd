"""Checkers for the exercises of ``05_granularity_and_calibration.ipynb``."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from functools import lru_cache

import torch

from ..data import digits_data
from ..models import digits_cnn
from ..nn import quantize_model_weights, quantize_weight
from ..observers import PercentileObserver
from ._core import (
    CheckFailed,
    call,
    checker,
    expect_close,
    fmt_pair,
    hint_for,
    one_number,
    passed,
)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Many small tensor operations: one thread is ten times faster than two on a busy CPU."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


# --------------------------------------------------------------------- granularity under a budget

_SCALE_BITS = 32


def _options(group_sizes) -> list:
    return ["tensor", "channel", *group_sizes]


def _measure(w: torch.Tensor, bits: int, option) -> tuple[float, int, int]:
    """(squared error summed over the weights, bits with scales, number of scales)."""
    if isinstance(option, str):
        w_hat, qp = quantize_weight(w, bits, granularity=option)
    else:
        w_hat, qp = quantize_weight(w, bits, granularity="group", group_size=option)
    err = float((w.double() - w_hat.double()).pow(2).sum())
    return err, bits * w.numel() + _SCALE_BITS * qp.scale.numel(), qp.scale.numel()


def _synthetic_layers() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(55)
    ffn = torch.randn(64, 256, generator=gen) * 0.05
    ffn[9, 100] = 2.0  # one giant weight, as in MiniLM's layer.0.output.dense
    attn = torch.randn(96, 96, generator=gen) * 0.08
    spread = torch.randn(32, 384, generator=gen) * torch.logspace(-2, 0, 32)[:, None]
    head = torch.randn(4, 64, generator=gen) * torch.tensor([[0.02], [0.1], [0.5], [1.0]])
    return {"ffn.out": ffn, "attn.query": attn, "proj": spread, "head": head}


def _cnn_layers() -> dict[str, torch.Tensor]:
    model = digits_cnn()
    return {n: getattr(model, n).weight.detach().clone() for n in ("conv1", "conv2", "fc1", "fc2")}


_BUDGET_CASES = (
    ("the digits CNN's 4 layers, 3 bits, budget 3.3 bits per weight", _cnn_layers, 3, 3.3,
     (32, 64, 128)),
    ("four transformer-like matrices (one giant weight), 4 bits, budget 4.3 bits per weight",
     _synthetic_layers, 4, 4.3, (16, 64, 128)),
)


@lru_cache(maxsize=len(_BUDGET_CASES))
def _budget_case(i: int):
    """(label, layers, bits, budget, group sizes, {(layer, option): measures}), built once."""
    label, make, bits, budget, sizes = _BUDGET_CASES[i]
    layers = make()
    table = {(n, o): _measure(w, bits, o) for n, w in layers.items() for o in _options(sizes)}
    return label, layers, bits, budget, sizes, table


def _best(layers, table, group_sizes, feasible) -> tuple[float, dict]:
    best = (float("inf"), {})
    for combo in itertools.product(_options(group_sizes), repeat=len(layers)):
        pick = dict(zip(layers, combo, strict=True))
        if feasible(pick):
            err = sum(table[n, o][0] for n, o in pick.items())
            if err < best[0]:
                best = (err, pick)
    return best


def _option_text(option) -> str:
    return repr(option) if isinstance(option, str) else f"group {option}"


@checker
def check_granularity_budget(answer) -> None:
    """``answer(weights, bits, budget, group_sizes)`` -> ``{layer: "tensor" | "channel" | g}``
    with the least total squared error whose bits, scales included, average within ``budget``."""
    with _one_thread():
        for i in range(len(_BUDGET_CASES)):
            _check_budget_case(answer, i)
    passed("your choices reach the least total squared error within every budget, scales "
           "counted, on the digits CNN's layers and on transformer-like matrices")


def _check_budget_case(answer, i: int) -> None:
    label, layers, bits, budget, sizes, table = _budget_case(i)
    what = f"choose_granularity for {label}, group sizes {sizes}"
    got = call(answer, {n: w.clone() for n, w in layers.items()}, bits, budget, sizes, what=what)
    if not isinstance(got, dict) or set(got) != set(layers):
        keys = sorted(got) if isinstance(got, dict) else type(got).__name__
        raise CheckFailed(f"{what}: expected a dict with one choice per layer {sorted(layers)}, "
                          f"got {keys}")
    for name, option in got.items():
        if isinstance(option, bool) or option not in _options(sizes):
            raise CheckFailed(f"{what}: layer {name!r} got {option!r}; a choice is \"tensor\", "
                              f"\"channel\" or a group size from {sizes}")
    n = sum(w.numel() for w in layers.values())

    def total(pick, col=0):
        return sum(table[k, o][col] for k, o in pick.items())

    got_bits, got_err = total(got, 1) / n, total(got)
    want_err, want = _best(layers, table, sizes, lambda p: total(p, 1) <= budget * n)
    chosen = ", ".join(f"{k}: {_option_text(o)}" for k, o in got.items())
    if got_bits > budget:
        mean_per_layer = sum(table[k, o][1] / layers[k].numel() for k, o in got.items()) / len(got)
        if mean_per_layer <= budget:
            hint = ("the budget is the average over all weights: weight each layer's bits per "
                    "weight by its number of weights (sum the bits, divide by the total number "
                    "of weights), not a plain mean over the layers")
        elif sum(bits * layers[k].numel() for k in got) / n <= budget:
            hint = (f"count {_SCALE_BITS} bits for every float32 scale as well as {bits} bits "
                    "for every code: qp.scale.numel() scales per layer")
        else:
            hint = "sum bits * numel + 32 * (number of scales) over the layers"
        g, w_ = fmt_pair(got_bits, budget)
        raise CheckFailed(f"{what}: your choice ({chosen}) takes {g} bits per weight, over the "
                          f"budget of {w_}. Hint: {hint}")
    if got_err <= want_err * (1 + 1e-9):
        return
    per_layer = _best(layers, table, sizes, lambda p: all(
        table[k, o][1] <= budget * layers[k].numel() for k, o in p.items()))
    plain = _best(layers, table, sizes, lambda p: sum(
        table[k, o][1] / layers[k].numel() for k, o in p.items()) <= budget * len(p))
    relative = {k: (v[0] / float(layers[k[0]].double().pow(2).sum()), *v[1:])
                for k, v in table.items()}
    rel = _best(layers, relative, sizes, lambda p: total(p, 1) <= budget * n)
    hint = hint_for(got_err, [
        ("the budget holds for the average over all weights, not for each layer: a large "
         "layer can stay coarse so that a small one gets fine groups (or the other way round)",
         total(per_layer[1])),
        ("that minimises the sum of each layer's relative error; the task's objective is the "
         "total squared error summed over all weights of all layers", total(rel[1])),
        ("the budget is the average over all weights: weight each layer's bits per weight by "
         "its number of weights, not a plain mean over the layers", total(plain[1])),
    ], rtol=1e-9, want=want_err,
        default="try every combination of choices (itertools.product) and keep the one with "
                "the least total squared error within the budget")
    g, w_ = fmt_pair(got_err, want_err)
    best_text = ", ".join(f"{k}: {_option_text(o)}" for k, o in want.items())
    raise CheckFailed(f"{what}: your choice ({chosen}) is within the budget but its total "
                      f"squared error is {g}; the best within the budget is {w_} ({best_text}). "
                      f"Hint: {hint}")


# --------------------------------------------------------------------- group size on the model

_KL_SIZES = (8, 16, 32, 64, 128)


@lru_cache(maxsize=1)
def _kl_images() -> torch.Tensor:
    return digits_data().x_test[:160].clone()


def _mean_kl(model, qmodel, images) -> float:
    with torch.no_grad():
        p = torch.log_softmax(model(images).double(), dim=-1)
        q = torch.log_softmax(qmodel(images).double(), dim=-1)
    return float((p.exp() * (p - q)).sum(dim=-1).mean())


@lru_cache(maxsize=4)
def _kl_curve(bits: int) -> dict[int, float]:
    model, images = digits_cnn(), _kl_images()
    return {g: _mean_kl(model, quantize_model_weights(model, bits, granularity="group",
                                                      group_size=g), images) for g in _KL_SIZES}


def _coarsest_within(curve: dict, tolerance: float) -> int:
    best = min(curve.values())
    return max(g for g, v in curve.items() if v <= (1 + tolerance) * best)


@checker
def check_flat_group_size(answer) -> None:
    """``answer(model, images, bits, sizes, tolerance)`` -> the largest group size whose mean
    KL(float32 || quantized) is within ``(1 + tolerance)`` of the smallest over ``sizes``."""
    with _one_thread():
        _check_flat_group_size(answer)


def _check_flat_group_size(answer) -> None:
    model = digits_cnn()
    images = _kl_images()
    found = {}
    for bits, tolerance in ((2, 0.5), (3, 0.5), (3, 1.0)):
        what = f"flat_group_size on the digits CNN, {bits} bits, tolerance {tolerance}"
        raw = call(answer, model, images.clone(), bits, _KL_SIZES, tolerance, what=what)
        got = one_number(raw, what)
        curve = _kl_curve(bits)
        want = _coarsest_within(curve, tolerance)
        found[bits, tolerance] = want
        if float(got) == want:
            continue

        def weight_choice(bits=bits, tolerance=tolerance):
            err = {}
            for g in _KL_SIZES:
                qm = quantize_model_weights(model, bits, granularity="group", group_size=g)
                err[g] = sum(float((a.detach() - b.detach()).double().pow(2).sum())
                             for a, b in zip(model.parameters(), qm.parameters(), strict=True))
            return _coarsest_within(err, tolerance)

        hint = hint_for(float(got), [
            ("judge the model's outputs (the KL of its softmax against float32's), not the "
             "weights' error: the weight error keeps falling with every smaller group",
             weight_choice),
            ("that is the size with the smallest KL; return the largest (cheapest) size whose "
             "KL is within (1 + tolerance) of that smallest one", min(curve, key=curve.get)),
            ("compare with the smallest KL over all sizes, not with the KL of the smallest "
             "size (the curve is not monotone)", max(
                 g for g, v in curve.items() if v <= (1 + tolerance) * curve[_KL_SIZES[0]])),
        ], want=float(want), default="quantize with qc.quantize_model_weights(model, bits, "
                                     "granularity=\"group\", group_size=g) for each size")
        curve_text = ", ".join(f"{g}: {v:.4f}" for g, v in curve.items())
        raise CheckFailed(f"{what}: expected group size {want}, got {fmt_pair(float(got), want)[0]}"
                          f" (mean KL per size: {curve_text}). Hint: {hint}")
    passed("your group sizes match the KL curves; on the digits CNN the coarsest group "
           f"within 50% of the best is {found[2, 0.5]} at 2 bits and {found[3, 0.5]} at 3 bits")


# --------------------------------------------------------------------- percentile threshold


def _percentile_cases() -> list[tuple[str, torch.Tensor, float]]:
    gen = torch.Generator().manual_seed(52)
    gauss = torch.randn(20_000, generator=gen)
    gauss[:12] = 25.0 * torch.sign(torch.randn(12, generator=gen))
    acts = torch.randn(64, 96, generator=gen) * 0.5
    acts[:, 5] -= 12.0  # one channel of large negative activations
    relu = torch.relu(torch.randn(4000, generator=gen)) ** 2
    small = torch.tensor([0.3, -1.7, 0.05, 2.2, -0.4, 0.9, -3.1])
    return [
        ("Gaussian data with 12 outliers at +-25, percentile 99.9", gauss, 99.9),
        ("a 64x96 activation matrix with a channel near -12, percentile 99", acts, 99.0),
        ("squared ReLU activations, percentile 99.99", relu, 99.99),
        ("seven values, percentile 90 (between two of them)", small, 90.0),
        ("Gaussian data with outliers, percentile 100", gauss, 100.0),
    ]


def _percentile_reference(x: torch.Tensor, p: float) -> torch.Tensor:
    obs = PercentileObserver(8, percentile=p, symmetric=True)
    obs.observe(x)
    return obs.range()[1]


def _percentile_hint(got: torch.Tensor, x: torch.Tensor, p: float) -> str:
    a = x.abs().flatten().float()
    n = a.numel()
    srt = a.sort().values
    rank = max(1, min(n, int(-(-p / 100 * n // 1))))
    variants = [
        (torch.quantile(x.flatten().float(), p / 100),
         "take the percentile of |x|, not of x: the clipping threshold is symmetric, "
         "[-t, t], so negative outliers count too"),
        (srt[rank - 1],
         "that is the nearest-rank percentile; interpolate linearly between the two nearest "
         "sorted values, as torch.quantile does by default"),
        (srt[min(n - 1, int(p / 100 * n))],
         "that picks one sorted value; interpolate linearly between the two nearest sorted "
         "values, as torch.quantile does by default"),
        (a.max() * p / 100,
         "the percentile is a value below which p % of the |x| fall, not p % of max|x|"),
    ]
    return hint_for(float(got), [(hint, float(value)) for value, hint in variants], rtol=1e-4,
                    atol=1e-16, default="t = torch.quantile(x.abs().flatten(), percentile / 100)")


@checker
def check_percentile_range(answer) -> None:
    """``answer(x, percentile)`` -> clipping threshold ``t``: the percentile of ``|x|``."""
    for label, x, p in _percentile_cases():
        what = f"clipping threshold for {label}"
        try:
            raw = call(answer, x.clone(), p, what=what)
        except CheckFailed as err:
            if "must be in the range [0, 1]" in str(err) or "q values" in str(err):
                raise CheckFailed(
                    f"{err}. Hint: the percentile comes in percent (99.9); torch.quantile "
                    "wants a fraction: pass percentile / 100"
                ) from None
            raise
        got = one_number(raw, what)
        want = _percentile_reference(x, p).double()
        expect_close(got, want, what, rtol=1e-4, atol=1e-7, hint=_percentile_hint(got, x, p))
    passed(
        "your thresholds match qc.PercentileObserver(symmetric=True) on outliers of both "
        "signs, between sorted values and at the 100th percentile"
    )


