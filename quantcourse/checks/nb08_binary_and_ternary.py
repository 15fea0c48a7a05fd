"""Checkers for the exercises of ``08_binary_and_ternary.ipynb``."""

from __future__ import annotations

import math
import numbers

import torch

from ..binary import ternarize
from ..models import digits_cnn
from ..packing import pack_bits
from ._core import CheckFailed, as_tensor, call, checker, fmt, hint_for, one_number, passed

# --------------------------------------------------------------------------- binary dot product


def _dot_cases() -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(8)

    def pm1(n: int) -> torch.Tensor:
        return torch.randint(0, 2, (n,), generator=gen) * 2 - 1

    a8 = torch.tensor([1, -1, -1, 1, 1, 1, -1, 1])
    cases = [
        ("8 signs (one byte each)", a8, torch.tensor([1, 1, -1, -1, 1, -1, -1, 1])),
        ("13 signs (the last byte padded)", pm1(13), pm1(13)),
        ("a vector with itself (5 signs)", a8[:5], a8[:5]),
        ("a vector with its negation (8 signs)", a8, -a8),
        ("a single sign", torch.tensor([-1]), torch.tensor([1])),
        ("100 random signs", pm1(100), pm1(100)),
        ("4096 random signs", pm1(4096), pm1(4096)),
    ]
    return cases


def _popcount(b: torch.Tensor) -> int:
    return sum(bin(int(v)).count("1") for v in b.reshape(-1).tolist())


def _dot_hint(got: float, a: torch.Tensor, b: torch.Tensor, pa: torch.Tensor,
              pb: torch.Tensor) -> str:
    n = a.numel()
    differ = _popcount(pa ^ pb)
    same_all = 8 * pa.numel() - differ  # XNOR over every stored bit, padding included
    variants = [
        (differ, "the number of differing bits is not the dot product yet: each differing "
                 "position contributes -1 and each equal one +1"),
        (n - differ, "every differing bit turns a +1 into a -1, a change of 2: "
                     "dot = n - 2 * (differing bits)"),
        (2 * same_all - 8 * pa.numel(), "the padding bits of the last byte are equal (both 0) "
                                        "but are not elements: count only the first n bits"),
        (same_all, "count the matching bits among the first n only, and subtract the "
                   "differing ones"),
        (-(n - 2 * differ), "equal bits are products (+1)(+1) or (-1)(-1) = +1: "
                            "they add to the dot product, differing bits subtract"),
        (float((pa.to(torch.int64) * pb.to(torch.int64)).sum()),
         "the bytes are not numbers to multiply: each bit is one sign (1 = +1, 0 = -1)"),
    ]
    return hint_for(got, [(hint, float(value)) for value, hint in variants],
                    default="dot = (matching bits) - (differing bits) over the first n bits")


@checker
def check_binary_dot(answer) -> None:
    """``answer(a_bytes, b_bytes, n)`` -> the dot product of two packed +-1 vectors."""
    for label, a, b in _dot_cases():
        pa, pb = pack_bits(a > 0, 1), pack_bits(b > 0, 1)
        n = a.numel()
        what = f"dot product of {label}"
        got = call(answer, pa.clone(), pb.clone(), n, what=what)
        g = one_number(got, what)
        want = int((a * b).sum())
        if float(g) != want:
            shown = f"{float(g):.0f}" if float(g).is_integer() else fmt(float(g))
            raise CheckFailed(f"{what}: expected {want}, got {shown}. "
                              f"Hint: {_dot_hint(float(g), a, b, pa, pb)}")
    passed("your dot products from packed bits match the +-1 arithmetic: "
           "dot = n - 2 * popcount(a XOR b), padding bits excluded")


# --------------------------------------------------------------------------- optimal ternary


def _ternary_cases() -> list[tuple[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(80)
    u = torch.rand(400, generator=gen, dtype=torch.float64) - 0.5
    laplace = (-torch.sign(u) * torch.log1p(-2 * u.abs())).float()  # inverse CDF, scale 1
    return [
        ("the weights [0.1, -2.0, 0.5, 1.4]", torch.tensor([0.1, -2.0, 0.5, 1.4])),
        ("1000 Gaussian weights", torch.randn(1000, generator=gen)),
        ("500 uniform weights", torch.rand(500, generator=gen) * 2 - 1),
        ("400 Laplace weights", laplace),
        ("a row of the digits CNN's fc1 weight", digits_cnn().fc1.weight.detach()[3].clone()),
        ("the weights [1, -1, 1, -1] (all equal magnitudes)", torch.tensor([1.0, -1.0, 1.0, -1.0])),
        ("a single weight [-0.3]", torch.tensor([-0.3])),
        ("all-zero weights", torch.zeros(6)),
    ]


def _optimal_error(w: torch.Tensor) -> float:
    """Smallest ||w - alpha c||^2 over ternary c and alpha: keep the k largest |w|, best k."""
    mag = torch.sort(w.double().abs(), descending=True).values
    gain = torch.cumsum(mag, 0) ** 2 / torch.arange(1, len(mag) + 1, dtype=torch.float64)
    return float((w.double() ** 2).sum() - gain.max().clamp(min=0))


def _sq_err(w: torch.Tensor, codes: torch.Tensor, alpha: float) -> float:
    return float(((w.double() - alpha * codes.double()) ** 2).sum())


def _ternary_hint(w: torch.Tensor, codes: torch.Tensor, alpha: float) -> str:
    kept = codes != 0
    if kept.any():
        best_alpha = float(w.double()[kept].abs().mean())
        if abs(alpha - best_alpha) > 1e-6 * (1 + best_alpha):
            return (f"for your codes the best alpha is the mean |w| of the kept weights, "
                    f"{best_alpha:.4g}; you returned {alpha:.4g}")
    if bool((codes.double() * w.double() < 0).any()):
        return "a kept weight's code must have the weight's sign"
    if bool(kept.all()) and w.numel() > 1:
        return ("you kept every weight (binary): dropping the smallest ones to 0 lowers the "
                "error")
    t_codes, t_alpha = ternarize(w)
    if torch.equal(codes, t_codes):
        return ("delta = 0.7 * mean|w| is a rule of thumb that is right only on average for "
                "bell-shaped weights: search the threshold itself")
    mags = w.abs()
    if kept.any() and (~kept).any() and float(mags[~kept].max()) > float(mags[kept].min()):
        return "keep the LARGEST magnitudes: a dropped weight is larger than a kept one"
    return ("with the weights sorted by |w|, the best codes keep the k largest; try every k "
            "and keep the one with the smallest error")


@checker
def check_optimal_ternary(answer) -> None:
    """``answer(w)`` -> ``(codes, alpha)`` with the least ``||w - alpha * codes||^2`` possible."""
    for label, w in _ternary_cases():
        what = f"optimal ternary codes of {label}"
        got = call(answer, w.clone(), what=what)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise CheckFailed(f"{what}: expected a pair (codes, alpha), got {type(got).__name__}")
        codes = as_tensor(got[0], f"{what}, codes")
        alpha_t = got[1]
        if isinstance(alpha_t, numbers.Real) and not isinstance(alpha_t, bool):
            alpha = float(alpha_t)
        else:
            alpha = float(one_number(alpha_t, f"{what}, alpha"))
        if codes.shape != w.shape:
            raise CheckFailed(f"{what}: codes must have the weights' shape {tuple(w.shape)}, "
                              f"got {tuple(codes.shape)}")
        c = codes.detach().double()
        if codes.is_complex() or not bool(((c == -1) | (c == 0) | (c == 1)).all()):
            raise CheckFailed(f"{what}: codes must lie in {{-1, 0, +1}}, got "
                              f"{fmt(torch.unique(c.real if c.is_complex() else c))}")
        if not math.isfinite(alpha) or alpha < 0:
            raise CheckFailed(f"{what}: alpha must be a finite number >= 0, got {alpha}")
        err = _sq_err(w, c, alpha)
        best = _optimal_error(w)
        if err > best + 1e-7 * (1 + abs(best)):
            raise CheckFailed(
                f"{what}: your squared error is {err:.6g}, the best possible is {best:.6g}. "
                f"Hint: {_ternary_hint(w, c, alpha)}"
            )
    passed("your codes and scale reach the smallest squared error possible on every test "
           "vector, including those where the 0.7 * mean|w| threshold does not")


# --------------------------------------------------------------------------- binary SQNR


_DISTRIBUTIONS = {
    # E|w| / sqrt(E[w^2]) for unit-scale distributions: uniform on [-1, 1], N(0, 1), Laplace(1)
    "uniform": (0.5, math.sqrt(1 / 3)),
    "gaussian": (math.sqrt(2 / math.pi), 1.0),
    "laplace": (1.0, math.sqrt(2.0)),
}


def _sqnr_reference(dist: str) -> float:
    mean_abs, rms = _DISTRIBUTIONS[dist]
    return -10 * math.log10(1 - (mean_abs / rms) ** 2)


def _sqnr_hint(got: float, dist: str) -> str:
    mean_abs, rms = _DISTRIBUTIONS[dist]
    r2 = (mean_abs / rms) ** 2
    ref = _sqnr_reference(dist)
    variants = [
        (-ref, "SQNR is signal power over noise power: a positive number of dB here"),
        (2 * ref, "these are powers (mean squares): 10 log10, not 20 log10"),
        (1 - r2, "that is the noise-to-signal ratio itself; convert to dB: -10 log10(...)"),
        (1 / (1 - r2), "that is the power ratio; convert it to dB with 10 log10"),
        (10 * math.log10(1 / r2), "the noise is E[w^2] - alpha^2, not alpha^2 itself"),
        (10 * math.log(1 / (1 - r2)), "decibels use log10, not the natural log"),
        (_sqnr_reference("gaussian"), "the answer depends on the distribution's shape through "
                                      "E|w| / sqrt(E[w^2])"),
        (-10 * math.log10(1 - mean_abs / rms), "the ratio alpha / w_rms enters squared: "
                                                "noise / signal = 1 - (E|w|)^2 / E[w^2]"),
    ]
    return hint_for(got, [(hint, value) for value, hint in variants], rtol=1e-3, atol=0.02,
                    want=ref, default="with alpha = E|w| the noise power is E[w^2] - (E|w|)^2: "
                                      "SQNR = -10 log10(1 - (E|w|)^2 / E[w^2])")


@checker
def check_binary_sqnr(answer) -> None:
    """``answer(dist)`` -> the SQNR in dB of optimal binarization for a distribution's shape."""
    for dist in ("uniform", "gaussian", "laplace"):
        what = f"binary SQNR for {dist} weights"
        got = float(one_number(call(answer, dist, what=what), what))
        want = _sqnr_reference(dist)
        if not math.isfinite(got) or abs(got - want) > 0.02:
            hint = _sqnr_hint(got, dist) if math.isfinite(got) else "a finite number of dB"
            raise CheckFailed(f"{what}: expected {want:.2f} dB (within 0.02), got {fmt(got)}. "
                              f"Hint: {hint}")
    passed("6.02 dB for uniform, 4.40 dB for Gaussian and 3.01 dB for Laplace weights: the "
           "heavier the tails, the worse one bit fits")
