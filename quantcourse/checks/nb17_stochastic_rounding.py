"""Checkers for the exercises of ``17_stochastic_rounding.ipynb``."""

from __future__ import annotations

import math
import numbers

import torch

from ..stochastic import stochastic_round
from ._core import CheckFailed, as_tensor, call, checker, fmt, one_number, passed

# --------------------------------------------------------------------------- fp16 stall point

_STALL_INCREMENTS = (1e-4, 1e-3, 3e-4, 2.0**-12, 0.01, 5e-5)


def _stall_reference(u: float) -> tuple[float, int]:
    """Add fp16(u) to an fp16 zero until the sum stops changing: (final sum, additions)."""
    inc = torch.tensor(u, dtype=torch.float16)
    s = torch.zeros((), dtype=torch.float16)
    n = 0
    while True:
        nxt = s + inc
        if bool(nxt == s):
            return float(s), n
        s, n = nxt, n + 1


def _unpack_stall(got, what: str) -> tuple[float, int]:
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise CheckFailed(f"{what}: expected a pair (final sum, number of additions), got {got!r}")
    value = float(one_number(got[0], what + ", the final sum"))
    n = got[1]
    if isinstance(n, torch.Tensor) and n.numel() == 1:
        n = n.item()
    if isinstance(n, float) and n.is_integer():
        n = int(n)
    if not isinstance(n, numbers.Integral) or isinstance(n, bool):
        raise CheckFailed(f"{what}: the number of additions must be an integer, got {n!r}")
    return value, int(n)


@checker
def check_fp16_stall(answer) -> None:
    """``answer(u)`` -> (the value where an fp16 round-to-nearest sum of ``u`` stops, additions)."""
    for u in _STALL_INCREMENTS:
        what = f"fp16 running sum of increments u = {u:.6g}"
        value, n = _unpack_stall(call(answer, u, what=what), what)
        want_value, want_n = _stall_reference(u)
        uh = float(torch.tensor(u, dtype=torch.float16))
        if value != want_value:
            if abs(value - want_n * uh) < 1e-9 or abs(value - n * uh) < 1e-9:
                hint = ("that is n * u, the exact sum; the fp16 sum differs from it because every "
                        "addition is rounded to the fp16 grid")
            elif value == 2 * want_value:
                hint = ("the sum stops as soon as u is at most HALF an ulp of the sum: "
                        "s + u then rounds back to s (an exact half goes to the even neighbour)")
            elif value == want_value / 2:
                hint = ("the sum only stops where u is at most HALF an ulp; where u is between "
                        "half an ulp and one ulp, each addition still rounds up to a whole ulp")
            else:
                hint = ("the sum stops at the first power of two P whose ulp, P * 2^-10, "
                        "is more than twice u (or exactly twice u: ties go to even)")
            raise CheckFailed(f"{what}: expected the sum to stop at {fmt(want_value)}, got "
                              f"{fmt(value)}. Hint: {hint}")
        if n != want_n:
            naive = round(want_value / uh)
            hint = ("below the stall point each addition is rounded too: in a binade whose ulp "
                    "is d, one addition adds round(u / d) * d, not u, so count binade by binade"
                    if n in (naive, naive - 1, naive + 1) else
                    "count the additions that change the sum, from 0 to the stall value")
            raise CheckFailed(f"{what}: the final sum {fmt(want_value)} is right, but it takes "
                              f"{want_n} additions to get there, not {n}. Hint: {hint}")
    passed("your stall points and addition counts match an fp16 running sum for "
           + ", ".join(f"{u:.3g}" for u in _STALL_INCREMENTS))


# --------------------------------------------------------------------------- SR sum spread

_SPREAD_CASES = [
    (1e-4, 2.0**-11, 5000),  # fp16 spacing in [0.5, 1)
    (0.3, 1.0, 100),  # an integer accumulator
    (0.5, 1.0, 10),  # the worst fraction
    (2.5, 1.0, 400),  # an increment above the spacing: only its fraction is random
    (0.01, 0.125, 10_000),
    (0.25, 0.125, 50),  # a multiple of the spacing: no randomness at all
]


def _spread_reference(u: float, step: float, n: int) -> float:
    p = u / step - math.floor(u / step)
    return math.sqrt(n * p * (1 - p)) * step


def _spread_hint(got: float, u: float, step: float, n: int) -> str:
    p = u / step - math.floor(u / step)
    r = u / step

    def close(a: float) -> bool:
        return abs(got - a) <= 1e-9 + 1e-6 * abs(a)

    if not math.isfinite(got) or (r > 1 and close(math.sqrt(abs(n * r * (1 - r))) * step)):
        return ("the accumulator is always on the grid, so only the fractional part of u / step "
                "is rounded at random; the whole steps are added exactly")
    if close(math.sqrt(n) * step / 2):
        return "p (1 - p) reaches 1/4 only for a fraction of 1/2: use the fraction of u / step"
    if close(n * step * math.sqrt(p * (1 - p))):
        return ("the rounding errors of the additions are independent: their VARIANCES add, "
                "so the spread grows with sqrt(n), not n")
    if close(math.sqrt(n * p * (1 - p))):
        return "the variance p (1 - p) is in units of the spacing: multiply the spread by step"
    if close(n * p * (1 - p) * step**2):
        return "that is the variance; the question asks for the standard deviation"
    return "one addition rounds with variance step^2 p (1 - p); n independent ones add up"


@checker
def check_sr_sum_spread(answer) -> None:
    """``answer(u, step, n)`` -> standard deviation of an SR sum of n increments u on a grid."""
    # The reference formula agrees with a simulation through qc.stochastic_round.
    gen = torch.Generator().manual_seed(0)
    sims = torch.zeros(4000, dtype=torch.float64)
    for _ in range(200):
        sims = stochastic_round(sims + 0.3, generator=gen)
    sd = float(sims.std())
    assert abs(sd - _spread_reference(0.3, 1.0, 200)) < 0.1 * sd, "checker reference is off"
    for u, step, n in _SPREAD_CASES:
        what = f"spread of {n} additions of {u:g} on a grid of spacing {step:g}"
        got = float(one_number(call(answer, u, step, n, what=what), what))
        want = _spread_reference(u, step, n)
        if not math.isfinite(got) or abs(got - want) > 1e-9 + 1e-6 * want:
            raise CheckFailed(f"{what}: expected a standard deviation of {fmt(want)}, got "
                              f"{fmt(got)}. Hint: {_spread_hint(got, u, step, n)}")
    passed("your spreads match step * sqrt(n p (1 - p)), p the fraction of u / step, on every "
           "grid (and a simulation with qc.stochastic_round)")


# --------------------------------------------------------------------------- SR to powers of two

_LOG2_VALUES = [0.3, 3.0, -5.5, 1.0, -0.25, 7.9, 1e-3, 100.0]
_LOG2_DRAWS = 20_000
_SIGMAS = 6.0


@checker
def check_sr_log2(answer) -> None:
    """``answer(x, generator)`` -> each element of ``x`` (nonzero) stochastically rounded to a
    signed power of two, unbiased."""
    what = "stochastic rounding to powers of two"
    x = torch.tensor(_LOG2_VALUES, dtype=torch.float64)
    xs = x.repeat(_LOG2_DRAWS, 1)
    got = call(answer, xs.clone(), torch.Generator().manual_seed(1), what=what)
    got = as_tensor(got, what)
    if got.shape != xs.shape:
        raise CheckFailed(f"{what}: expected the input's shape {tuple(xs.shape)}, "
                          f"got {tuple(got.shape)}")
    if got.is_complex() or not got.is_floating_point():
        raise CheckFailed(f"{what}: expected float values, got {got.dtype}")
    got = got.detach().double().cpu()
    mag = x.abs()
    lo = torch.exp2(torch.floor(torch.log2(mag)))
    lo = torch.where(lo > mag, lo / 2, lo)
    hi = 2 * lo
    sign = torch.sign(x)
    on_grid = (got == sign * lo) | (got == sign * hi)
    if not bool(on_grid.all()):
        j = int((~on_grid).nonzero()[0, 1])
        bad = float(got[:, j][~on_grid[:, j]][0])
        raise CheckFailed(f"{what}: {fmt(float(x[j]))} must go to {fmt(float(sign[j] * lo[j]))} or "
                          f"{fmt(float(sign[j] * hi[j]))}, got {fmt(bad)}. Hint: the two powers of "
                          "two around |x|, with the sign of x")
    exact = mag == lo
    if not bool((got[:, exact] == x[exact]).all()):
        raise CheckFailed(f"{what}: a power of two such as 1.0 must stay exactly itself")
    p = (mag - lo) / (hi - lo)
    mean = got.mean(0)
    bound = _SIGMAS * (hi - lo) * torch.sqrt(p * (1 - p) / _LOG2_DRAWS) + 1e-12
    err = (mean - x).abs()
    if not bool((err <= bound).all()):
        j = int((err > bound).nonzero()[0])
        up = float((got[:, j] == sign[j] * hi[j]).double().mean())
        p_log = float(torch.log2(mag[j] / lo[j]))
        if abs(up - p_log) < 0.02:
            hint = ("you interpolated in the exponent (log2 |x|); unbiased rounding needs the "
                    "probability linear in the VALUE: p = (|x| - lo) / (hi - lo)")
        elif up in (0.0, 1.0):
            hint = "the choice must be random: up with probability (|x| - lo) / (hi - lo)"
        elif abs(up - (1 - float(p[j]))) < 0.02:
            hint = "the probabilities are swapped: the CLOSER neighbour must be the likelier one"
        else:
            hint = "go up with probability (|x| - lo) / (hi - lo)"
        raise CheckFailed(f"{what}: biased at x = {fmt(float(x[j]))}: the mean of "
                          f"{_LOG2_DRAWS} roundings is {float(mean[j]):.5g} (x is "
                          f"{float(x[j]):.5g}; 6 sigma is {float(bound[j]):.2g}); you went up "
                          f"{up:.1%} of the time, unbiased is {float(p[j]):.1%}. Hint: {hint}")
    passed("your rounding lands on the two neighbouring powers of two, keeps exact powers, "
           f"and its mean over {_LOG2_DRAWS:,} draws matches x within 6 standard deviations")
