"""Checkers for the exercises of ``05_granularity_and_calibration.ipynb``."""

from __future__ import annotations

import torch

from ..affine import QParams, asymmetric_qparams, fake_quantize, symmetric_qparams
from ..observers import PercentileObserver, qparams_from_range
from ._core import (
    CheckFailed,
    as_tensor,
    call,
    checker,
    expect_close,
    fmt,
    hint_for,
    narrow_qmax,
    one_number,
    passed,
)

_EPS = torch.finfo(torch.float32).eps


# --------------------------------------------------------------------- per-channel scales


def _channel_cases() -> list[tuple[str, torch.Tensor, int]]:
    gen = torch.Generator().manual_seed(51)
    # rows with very different ranges, as in a real layer (non-square: axis mistakes show as shape)
    rows = torch.randn(16, 48, generator=gen) * torch.logspace(-2, 0, 16)[:, None]
    square = torch.randn(24, 24, generator=gen) * torch.linspace(0.01, 0.5, 24)[:, None]
    neg = torch.randn(8, 32, generator=gen) * 0.05
    neg[:, 7] = -torch.linspace(0.2, 0.9, 8)  # each row's largest magnitude is negative
    pruned = torch.randn(12, 40, generator=gen) * 0.1
    pruned[[2, 9]] = 0.0  # two pruned output channels: all-zero rows
    return [
        ("a 16x48 weight whose rows span two decades, 8 bits", rows, 8),
        ("a square 24x24 weight with growing row ranges, 4 bits", square, 4),
        ("an 8x32 weight whose largest magnitudes are negative, 3 bits", neg, 3),
        ("a 12x40 weight with two all-zero (pruned) rows, 8 bits", pruned, 8),
    ]


def _channel_hint(got: torch.Tensor, w: torch.Tensor, bits: int) -> str:
    qmax = narrow_qmax(bits)
    amax_rows = w.abs().amax(dim=1)
    variants = [
        (torch.clamp(w.abs().amax(dim=0) / qmax, min=_EPS),
         "that is one scale per input column (axis 1); per output channel means one scale "
         "per row (axis 0): reduce over the input dimension, w.abs().amax(dim=1)"),
        (torch.clamp(w.abs().max() / qmax, min=_EPS).expand(w.shape[0]),
         "every channel got the same, per-tensor scale; compute max|w| separately for each "
         "row, w.abs().amax(dim=1)"),
        (amax_rows / qmax,
         "an all-zero row gets max|w| = 0 and a scale of 0 (then w / s is NaN); clamp each "
         "scale to at least torch.finfo(torch.float32).eps"),
        (torch.clamp(amax_rows / 2 ** (bits - 1), min=_EPS),
         "the narrow grid's largest code is 2^(b-1) - 1, so divide by 2^(b-1) - 1, "
         "not 2^(b-1)"),
        (torch.clamp(w.amax(dim=1) / qmax, min=_EPS),
         "use the largest magnitude |w| of each row (w.abs().amax(dim=1)), not the largest "
         "value"),
        (torch.clamp(amax_rows / (2**bits - 1), min=_EPS),
         "that divides by 2^b - 1 (an unsigned grid); symmetric uses 2^(b-1) - 1"),
    ]
    return hint_for(got, [(hint, value) for value, hint in variants], rtol=1e-5, atol=1e-12,
                    default="s_i = max_j |w_ij| / (2^(b-1) - 1) for each output channel i, at "
                            "least float32 eps")


@checker
def check_per_channel_scales(answer) -> None:
    """``answer(w, bits)`` -> the symmetric scale of each output channel (row) of a 2-D ``w``."""
    for label, w, bits in _channel_cases():
        what = f"per-channel scales for {label}"
        got = as_tensor(call(answer, w.clone(), bits, what=what), what)
        want = symmetric_qparams(w, bits, axis=0).scale
        if got.shape != want.shape:
            if got.numel() == w.shape[1] and w.shape[0] != w.shape[1]:
                hint = ("one scale per output channel means one per row (axis 0), "
                        f"{w.shape[0]} here; you returned {w.shape[1]}, one per input column: "
                        "reduce over dim=1")
            elif got.numel() == 1:
                hint = ("that is a single per-tensor scale; return one scale per row, shape "
                        f"({w.shape[0]},)")
            elif got.numel() == w.shape[0]:
                hint = f"return a 1-D tensor of shape ({w.shape[0]},), e.g. .amax(dim=1)"
            else:
                hint = f"return one scale per output channel: shape ({w.shape[0]},)"
            raise CheckFailed(
                f"{what}: expected shape {tuple(want.shape)}, got {tuple(got.shape)}. "
                f"Hint: {hint}"
            )
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise CheckFailed(f"{what}: your scales hold NaN or Inf ({fmt(got)}). Hint: "
                              + _channel_hint(got, w, bits))
        expect_close(got, want, what, rtol=1e-5, atol=0.0, hint=_channel_hint(got, w, bits))
    passed(
        "your per-output-channel scales match qc.symmetric_qparams(w, bits, axis=0) at 3, 4 "
        "and 8 bits, with negative peaks and all-zero rows"
    )


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


# --------------------------------------------------------------------- clipping vs rounding


def _split_cases() -> list[tuple[str, torch.Tensor, QParams]]:
    gen = torch.Generator().manual_seed(53)
    gauss = torch.randn(5000, generator=gen)
    gauss[:20] = 9.0 * torch.sign(torch.randn(20, generator=gen))
    gelu = torch.nn.functional.gelu(torch.randn(40, 100, generator=gen) * 1.5)
    gelu[:, 3] += 15.0  # an outlier channel
    small = torch.randn(300, generator=gen) * 0.2
    return [
        ("Gaussian data with outliers at +-9, 4-bit symmetric grid clipped at +-2.5", gauss,
         qparams_from_range(torch.tensor(-2.5), torch.tensor(2.5), 4, symmetric=True)),
        ("GELU activations with an outlier channel, 4-bit asymmetric grid on [-0.2, 3]",
         gelu, qparams_from_range(torch.tensor(-0.2), torch.tensor(3.0), 4)),
        ("GELU activations, 8-bit asymmetric min-max grid (nothing clipped)", gelu,
         asymmetric_qparams(gelu, 8)),
        ("small Gaussian values, 3-bit symmetric grid clipped at +-0.1", small,
         qparams_from_range(torch.tensor(-0.1), torch.tensor(0.1), 3, symmetric=True)),
    ]


def _clamped(x: torch.Tensor, qp: QParams) -> torch.Tensor:
    code = torch.round(x * torch.reciprocal(qp.scale)) + qp.zero_point
    return (code < qp.qmin) | (code > qp.qmax)


def _split_reference(x: torch.Tensor, qp: QParams) -> tuple[float, float, int]:
    x_hat = fake_quantize(x, qp)
    outside = _clamped(x, qp)
    err2 = (x.double() - x_hat.double()) ** 2
    n = x.numel()
    return float(err2[outside].sum()) / n, float(err2[~outside].sum()) / n, int(outside.sum())


def _split_hint(got: tuple[float, float], x: torch.Tensor, qp: QParams) -> str:
    clip, rnd, n_out = _split_reference(x, qp)
    g_clip, g_rnd = got
    x_hat = fake_quantize(x, qp)
    err2 = (x.double() - x_hat.double()) ** 2
    n = x.numel()

    def close(a: float, b: float) -> bool:
        return abs(a - b) <= 1e-4 * max(abs(b), 1e-12)

    if close(g_clip, rnd) and close(g_rnd, clip) and not close(clip, rnd):
        return "return (clipping, rounding) in that order"
    if (n_out and close(g_clip, clip * n / n_out)) or (
            n_out < n and close(g_rnd, rnd * n / (n - n_out))):
        return ("divide both sums by the total number of values x.numel(), not by the size of "
                "each part, so that clipping + rounding = the total MSE")
    no_zp = torch.round(x * torch.reciprocal(qp.scale))
    out_no_zp = (no_zp < qp.qmin) | (no_zp > qp.qmax)
    if int(qp.zero_point) != 0 and close(g_clip, float(err2[out_no_zp].sum()) / n):
        return ("add the zero point to the rounded value before comparing the code with "
                "[qmin, qmax]: code = round(x / s) + z")
    lo = qp.scale * (qp.qmin - qp.zero_point)
    hi = qp.scale * (qp.qmax - qp.zero_point)
    out_ends = (x < lo) | (x > hi)
    if close(g_clip, float(err2[out_ends].sum()) / n):
        return ("a value beyond the grid's end by less than half a step rounds onto the end "
                "without clamping; count a value as clipped only when its code round(x / s) + z "
                "falls outside [qmin, qmax]")
    if close(g_clip + g_rnd, clip + rnd):
        return ("the total is right but the split is not: a value is clipped when its code "
                "round(x / s) + z falls outside [qmin, qmax]")
    return ("x_hat = qc.fake_quantize(x, qp); values whose code round(x / s) + z falls outside "
            "[qmin, qmax] give the clipping part, the others the rounding part, both summed "
            "squared errors divided by x.numel()")


@checker
def check_clipping_split(answer) -> None:
    """``answer(x, qp)`` -> ``(clipping_mse, rounding_mse)``, adding up to the total MSE."""
    for label, x, qp in _split_cases():
        what = f"clipping / rounding split for {label}"
        got = call(answer, x.clone(), qp, what=what)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise CheckFailed(f"{what}: expected a pair (clipping_mse, rounding_mse), got "
                              f"{type(got).__name__}")
        g = tuple(float(one_number(v, what)) for v in got)
        clip, rnd, _ = _split_reference(x, qp)
        hint = _split_hint(g, x, qp)
        expect_close(torch.tensor(g[0], dtype=torch.float64),
                     torch.tensor(clip, dtype=torch.float64),
                     f"{what} (clipping part)", rtol=1e-4, atol=1e-12, hint=hint)
        expect_close(torch.tensor(g[1], dtype=torch.float64),
                     torch.tensor(rnd, dtype=torch.float64),
                     f"{what} (rounding part)", rtol=1e-4, atol=1e-12, hint=hint)
    passed(
        "your split matches on symmetric and asymmetric grids, with and without clipped "
        "values, and the two parts add up to the total MSE"
    )
