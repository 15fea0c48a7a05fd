"""Checkers for the exercises of ``02_scale_and_zero_point.ipynb``."""

from __future__ import annotations

import numbers

import torch

from ..affine import QParams, asymmetric_qparams, fake_quantize, quantize
from ..metrics import mse
from ..models import digits_cnn
from ._core import (
    CheckFailed,
    as_codes,
    call,
    checker,
    close,
    division_trap,
    expect_equal,
    fmt_pair,
    hint_for,
    one_number,
    passed,
    without_package,
)


def _digits_weight(name: str) -> torch.Tensor:
    return digits_cnn().state_dict()[name].detach().clone()


# --------------------------------------------------------------------------- clipping factor

_FACTORS = [round(0.30 + 0.05 * i, 2) for i in range(15)]  # 0.30, 0.35, ..., 1.00


def _clipped_qparams(w: torch.Tensor, bits: int, c: float, *, symmetric: bool = False) -> QParams:
    if symmetric:
        r = c * w.abs().max()
        return asymmetric_qparams(torch.stack([-r, r]), bits)
    return asymmetric_qparams(torch.stack([c * w.min(), c * w.max()]), bits)


def _clip_mse(w: torch.Tensor, bits: int, factors: list[float]) -> list[float]:
    return [mse(w, fake_quantize(w, _clipped_qparams(w, bits, c))) for c in factors]


def _clip_mistakes(w: torch.Tensor, bits: int, factors: list[float], errs: list[float]):
    """The factor each plausible wrong criterion picks (computed only for a wrong answer)."""
    maxerr, inside_mse, sym = [], [], []
    for c in factors:
        qp = _clipped_qparams(w, bits, c)
        w_hat = fake_quantize(w, qp)
        lo = float(qp.scale) * (qp.qmin - int(qp.zero_point))
        hi = float(qp.scale) * (qp.qmax - int(qp.zero_point))
        inside = (w >= lo) & (w <= hi)
        maxerr.append(float((w - w_hat).abs().max()))
        inside_mse.append(mse(w[inside], w_hat[inside]))
        sym.append(mse(w, fake_quantize(w, _clipped_qparams(w, bits, c, symmetric=True))))

    def argmin(v):
        return min(range(len(v)), key=v.__getitem__)

    return [
        ("you measured the error of the values inside the grid only; the clipped values pay "
         "the distance to the grid's end, count them too", argmin(inside_mse)),
        ("you minimised the largest error; the criterion is the mean squared error over all "
         "values", argmin(maxerr)),
        ("you clipped a symmetric range [-c max|w|, c max|w|]; clip each end of the range: "
         "[c min(w), c max(w)]", argmin(sym)),
        ("you picked the factor with the largest error; keep the smallest",
         max(range(len(errs)), key=errs.__getitem__)),
    ]


def _clip_cases() -> list[tuple[str, torch.Tensor, int]]:
    return [
        ("the digits CNN's fc1.weight (64 x 512), 4 bits", _digits_weight("fc1.weight"), 4),
        ("the digits CNN's conv2.weight (32 x 16 x 3 x 3), 3 bits",
         _digits_weight("conv2.weight"), 3),
        ("the digits CNN's fc2.weight (10 x 64), 4 bits", _digits_weight("fc2.weight"), 4),
        ("the digits CNN's conv1.weight (16 x 1 x 3 x 3), 8 bits",
         _digits_weight("conv1.weight"), 8),
    ]


@checker
def check_clip_factor(answer) -> None:
    """``answer(w, bits, factors)`` -> the factor whose clipped grid gives the lowest MSE."""
    chosen = []
    for label, w, bits in _clip_cases():
        what = f"best_clip_factor on {label}"
        got = call(answer, w.clone(), bits, list(_FACTORS), what=what)
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = float(got)
        if not isinstance(got, numbers.Real) or isinstance(got, bool):
            raise CheckFailed(f"{what}: return one of the factors (a number), "
                              f"got {type(got).__name__}")
        errs = _clip_mse(w, bits, _FACTORS)
        best = min(range(len(_FACTORS)), key=errs.__getitem__)
        match = [i for i, c in enumerate(_FACTORS) if abs(float(got) - c) < 1e-9]
        if not match:
            hint = ("you returned a position in the list, not the factor itself"
                    if float(got) == best else "return the factor itself, an element of "
                    "`factors`")
            raise CheckFailed(f"{what}: {float(got)!r} is not one of the factors "
                              f"{_FACTORS[0]}, {_FACTORS[1]}, ..., {_FACTORS[-1]}. Hint: {hint}")
        i = match[0]
        if i != best:
            hint = hint_for(i, _clip_mistakes(w, bits, _FACTORS, errs), want=best,
                            default="quantize w with qc.asymmetric_qparams over "
                                    "[c min(w), c max(w)] for every c, keep the lowest qc.mse")
            g, e = fmt_pair(errs[i], errs[best])
            raise CheckFailed(f"{what}: expected factor {_FACTORS[best]} (MSE {e}), got "
                              f"{_FACTORS[i]} (MSE {g}). Hint: {hint}")
        name = label.split(" (")[0].replace("the digits CNN's ", "")
        gain = errs[-1] / errs[best]
        chosen.append(f"{name} at {bits} bits: c = {_FACTORS[best]}"
                      + (f" ({gain:.2f}x lower MSE than c = 1)" if best != len(errs) - 1
                         else " (no clipping)"))
    passed("your factors are the brute-force best on 4 digits-CNN weights. "
           + "; ".join(chosen))
# --------------------------------------------------------------------------- MSE prediction


def _grid_ends(qp: QParams) -> tuple[float, float, float]:
    s = float(qp.scale)
    z = int(qp.zero_point)
    return s, s * (qp.qmin - z), s * (qp.qmax - z)


def _predicted_mse(x: torch.Tensor, qp: QParams) -> float:
    s, lo, hi = _grid_ends(qp)
    xd = x.double().reshape(-1)
    inside = (xd >= lo) & (xd <= hi)
    clip = torch.where(xd > hi, xd - hi, torch.where(xd < lo, lo - xd, 0.0))
    return float((inside.sum() * s**2 / 12 + (clip**2).sum()) / xd.numel())


def _mse_variants(x: torch.Tensor, qp: QParams) -> list[tuple[str, object]]:
    s, lo, hi = _grid_ends(qp)
    xd = x.double().reshape(-1)
    n = xd.numel()
    clip = torch.where(xd > hi, xd - hi, torch.where(xd < lo, lo - xd, 0.0))
    inside = (xd >= lo) & (xd <= hi)
    lo0, hi0 = s * qp.qmin, s * qp.qmax
    clip0 = torch.where(xd > hi0, xd - hi0, torch.where(xd < lo0, lo0 - xd, 0.0))
    inside0 = (xd >= lo0) & (xd <= hi0)
    return [
        ("that is the measured MSE: predict it without quantizing, from s^2/12 inside the "
         "grid and the distance to the grid's end outside it",
         lambda: mse(x, fake_quantize(x, qp))),
        ("values beyond the grid's ends are clipped: their error is the distance to the end, "
         "not s^2/12", s**2 / 12),
        ("a clipped value has no rounding error on top of its clipping error: it lands "
         "exactly on the end, so count s^2/12 for the values inside only",
         float(s**2 / 12 + (clip**2).sum() / n)),
        ("the mean square of an error spread evenly over [-s/2, s/2] is s^2/12, not (s/2)^2",
         float((inside.sum() * s**2 / 4 + (clip**2).sum()) / n)),
        ("the grid's ends are s (q_min - z) and s (q_max - z): subtract the zero point",
         float((inside0.sum() * s**2 / 12 + (clip0**2).sum()) / n)),
    ]


def _mse_cases() -> list[tuple[str, torch.Tensor, QParams]]:
    fc1 = _digits_weight("fc1.weight")
    conv2 = _digits_weight("conv2.weight")
    g = torch.Generator().manual_seed(22)
    u = torch.rand(20_000, generator=g) - 0.5
    lap = -torch.sign(u) * torch.log1p(-2 * u.abs())  # Laplace: a heavy-tailed tensor
    gauss = torch.randn(50_000, generator=g) * 0.5 + 0.2
    sigma = float(fc1.std())
    return [
        ("the digits CNN's fc1.weight on an unsigned 4-bit grid clipped to [-2 sigma, 2 sigma]",
         fc1, asymmetric_qparams(torch.tensor([-2 * sigma, 2 * sigma]), 4)),
        ("the digits CNN's conv2.weight on its own 6-bit range (nothing clipped)",
         conv2, asymmetric_qparams(conv2, 6)),
        ("Gaussian values (mean 0.2) on a 3-bit grid covering only [-0.5, 0.8]",
         gauss, asymmetric_qparams(torch.tensor([-0.5, 0.8]), 3)),
        ("heavy-tailed (Laplace) values on a signed 8-bit grid [-128, 127], zero point 10, "
         "scale 0.02", lap, QParams(torch.tensor(0.02), torch.tensor(10), -128, 127)),
    ]


@checker
def check_mse_prediction(answer) -> None:
    """``answer(x, qp)`` -> the MSE predicted from s^2/12 inside the grid and clipping outside."""
    shown = []
    for label, x, qp in _mse_cases():
        what = f"predicted MSE for {label}"
        got = one_number(call(answer, x.clone(), qp, what=what), what)
        want = _predicted_mse(x, qp)
        if not close(got, want, rtol=1e-4):
            hint = hint_for(got, _mse_variants(x, qp), rtol=1e-4, want=want,
                            default="mean over all values of: s^2/12 for a value inside "
                                    "[s (q_min - z), s (q_max - z)], (distance to the nearer "
                                    "end)^2 for a value outside")
            g, e = fmt_pair(float(got), want)
            raise CheckFailed(f"{what}: expected {e}, got {g}. Hint: {hint}")
        shown.append((want, mse(x, fake_quantize(x, qp))))
    ratios = ", ".join(f"{p:.3g} / {m:.3g}" for p, m in shown)
    passed("your predictions match the model on 4 tensors, clipped and unclipped. Predicted / "
           f"measured MSE: {ratios}")


# --------------------------------------------------------------------------- per-row quantize


def _row_quantize_variants(x, s, z, qmin, qmax):
    """What common wrong versions give (used to name the mistake)."""
    col = s.reshape(-1, 1)
    zc = z.reshape(-1, 1).to(torch.float32)
    v = x * (1 / col)

    def clamp(t):
        return torch.clamp(t, qmin, qmax)

    out = []
    if x.shape[0] == x.shape[-1]:
        out.append(("scale[j] and zero_point[j] belong to row j: reshape them to a column, "
                    "scale.reshape(-1, 1), before broadcasting; a 1-D tensor broadcasts along "
                    "the last dimension (the columns)",
                    clamp(torch.round(x * (1 / s)) + z.to(torch.float32))))
    out += [
        ("you divided by the scale: multiply by its float32 reciprocal, x * (1 / scale), as "
         "qc.quantize and torch.fake_quantize_per_channel_affine do (x / s and x * (1/s) "
         "can round differently at exact halves)", clamp(torch.round(x / col) + zc)),
        ("the zero point is added after rounding: round(x * (1/s)) + z, not round(x/s + z)",
         clamp(torch.round(v + zc))),
        ("you forgot the clamp to [qmin, qmax]: values beyond the grid must saturate",
         torch.round(v) + zc),
        ("you used floor or a cast to an integer; use torch.round (round half to even)",
         clamp(torch.floor(v) + zc)),
        ("you used floor or a cast to an integer; use torch.round (round half to even)",
         clamp(torch.trunc(v) + zc)),
        ("you rounded halves away from zero; torch.round rounds half to even",
         clamp(torch.sign(v) * torch.floor(v.abs() + 0.5) + zc)),
        ("sign error: the zero point is added, q = round(x * (1/s)) + z",
         clamp(torch.round(v) - zc)),
    ]
    return out


def _row_cases():
    g = torch.Generator().manual_seed(23)
    square = torch.randn(8, 8, generator=g) * torch.linspace(0.2, 3.0, 8).reshape(-1, 1)
    sq_qp = QParams(square.abs().amax(dim=1) / 127, torch.zeros(8, dtype=torch.int32),
                    -127, 127, axis=0)
    calib = torch.randn(16, 40, generator=g) * torch.rand(16, 1, generator=g) + 0.3
    new = 1.5 * torch.randn(16, 40, generator=g) * torch.rand(16, 1, generator=g)
    wide_qp = asymmetric_qparams(calib, 8, axis=0)
    scales = [0.0123, 0.37, 0.0071, 1.9]
    zps = [0, 5, -3, 2]
    trap = torch.stack([division_trap(s, 8, lo=-110, hi=110) for s in scales])
    trap_qp = QParams(torch.tensor(scales), torch.tensor(zps), -128, 127, axis=0)
    fc1 = _digits_weight("fc1.weight")
    fc1_qp = QParams(fc1.abs().amax(dim=1) / 7, torch.zeros(64, dtype=torch.int32), -8, 7,
                     axis=0)
    return [
        ("a square 8 x 8 matrix, one scale per row, grid [-127, 127]", square, sq_qp),
        ("new 16 x 40 activations on per-row unsigned 8-bit grids from other data (values "
         "beyond the grids, zero points 0..255)", new, wide_qp),
        ("values near exact halves for 4 rows with scales 0.0123, 0.37, 0.0071, 1.9 and zero "
         "points 0, 5, -3, 2", trap, trap_qp),
        ("the digits CNN's fc1.weight on a signed 4-bit grid [-8, 7], one scale per output "
         "channel", fc1, fc1_qp),
    ]


@checker
def check_quantize(answer) -> None:
    """``answer(x, scale, zero_point, qmin, qmax)`` with one scale and zero point per row,
    written without the package."""
    what = "quantize_rows"
    cases = _row_cases()
    for label, x, qp in cases:
        where = f"{what} on {label}"
        s, z = qp.scale.clone(), qp.zero_point.clone()
        with without_package(where):
            out = call(answer, x.clone(), s.clone(), z.clone(), qp.qmin, qp.qmax, what=where)
        got = as_codes(out, where)
        want = quantize(x, qp).to(torch.int64)
        if got.shape != want.shape:
            raise CheckFailed(f"{where}: expected shape {tuple(want.shape)}, "
                              f"got {tuple(got.shape)}")
        hint = hint_for(got, _row_quantize_variants(x, s, z, qp.qmin, qp.qmax), want=want,
                        default="q[j, k] = clamp(round(x[j, k] * (1 / scale[j])) + "
                                "zero_point[j], qmin, qmax)")
        expect_equal(got, want, where, hint=hint)
    passed(f"{what} matches qc.quantize per channel (axis=0) on {len(cases)} cases: a square "
           "matrix, values beyond the grid, near-halves and a digits-CNN weight")
