"""Stochastic rounding: qc.stochastic_round, qc.stochastic_cast and quantize(rounding="stochastic").

Monte Carlo tolerances. n independent draws of SR(x) are Bernoulli(p) steps (p the fraction,
in units of the spacing d), so their mean has standard deviation d * sqrt(p (1 - p) / n),
at most d / (2 sqrt(n)). The tests allow 6 of those standard deviations: for one element
the chance that a correct implementation lands outside is below 2e-9 (normal tail), so even
over a few thousand elements a false failure is below 1e-5; the seeds are fixed, so in
practice the tests are deterministic. A biased rounding (round-to-nearest, truncation, a
flipped probability) misses by a fixed fraction of d, far beyond 6 sigma at these n.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import quantcourse as qc

N_DRAWS = 20_000
SIGMAS = 6.0


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mc_bound(p: torch.Tensor, n: int, spacing: torch.Tensor | float = 1.0) -> torch.Tensor:
    """SIGMAS standard deviations of the mean of n draws, plus a float64 rounding floor."""
    return SIGMAS * spacing * torch.sqrt(p * (1 - p) / n) + 1e-12


# ----------------------------------------------------------------------- stochastic_round


def test_integers_never_move():
    x = torch.tensor([-3.0, -1.0, 0.0, 2.0, 1e6, -(2.0**20)])
    for seed in range(5):
        assert torch.equal(qc.stochastic_round(x, generator=_gen(seed)), x)


def test_results_are_the_two_neighbours():
    x = torch.randn(1000, generator=_gen(1), dtype=torch.float64) * 10
    r = qc.stochastic_round(x, generator=_gen(2))
    assert torch.equal(r, r.round())  # integers
    assert bool(((r == torch.floor(x)) | (r == torch.floor(x) + 1)).all())


def test_half_goes_each_way_about_half_the_time():
    # 2.5 and -0.5: p = 1/2, the count of "up" is Binomial(n, 1/2): mean n/2, sd sqrt(n)/2.
    n = N_DRAWS
    x = torch.tensor([2.5, -0.5], dtype=torch.float64).repeat(n, 1)
    r = qc.stochastic_round(x, generator=_gen(3))
    ups = (r == torch.tensor([3.0, 0.0], dtype=torch.float64)).sum(0).double()
    assert bool((r.min(0).values >= torch.tensor([2.0, -1.0], dtype=torch.float64)).all())
    assert bool(((ups - n / 2).abs() <= SIGMAS * math.sqrt(n) / 2).all()), ups


def test_unbiased_by_monte_carlo():
    x = torch.tensor([0.1, 0.3, 0.7, 0.999, -0.25, -2.9, 12.01, 5.5], dtype=torch.float64)
    draws = qc.stochastic_round(x.repeat(N_DRAWS, 1), generator=_gen(4))
    p = x - torch.floor(x)
    err = (draws.mean(0) - x).abs()
    assert bool((err <= _mc_bound(p, N_DRAWS)).all()), err
    # and the draws spread as Bernoulli(p) does: variance p (1 - p), within 6 sigma of the
    # sample variance's own sd (sqrt(p(1-p)(1-2p)^2... bounded by 1/(2 sqrt(n)) for p(1-p)<=1/4)
    var = draws.var(0, unbiased=False)
    assert bool(((var - p * (1 - p)).abs() <= SIGMAS * 0.5 / math.sqrt(N_DRAWS)).all()), var


def test_round_to_nearest_would_fail_the_same_test():
    # The Monte Carlo bound is tight enough to catch a biased rounding: the test can fail.
    x = torch.tensor([0.3], dtype=torch.float64)
    p = x - torch.floor(x)
    assert bool(((torch.round(x) - x).abs() > _mc_bound(p, N_DRAWS)).all())
    assert bool(((torch.floor(x) - x).abs() > _mc_bound(p, N_DRAWS)).all())


@settings(max_examples=25, deadline=None)
@given(st.floats(-1e3, 1e3, allow_nan=False), st.integers(0, 2**31 - 1))
def test_unbiased_for_any_value(value, seed):
    n = 4000
    x = torch.full((n,), value, dtype=torch.float64)
    r = qc.stochastic_round(x, generator=_gen(seed))
    p = torch.tensor(value - math.floor(value), dtype=torch.float64)
    assert abs(float(r.mean()) - value) <= float(_mc_bound(p, n)) + 1e-9


def test_same_generator_state_same_result_and_different_seeds_differ():
    x = torch.rand(500, generator=_gen(5)) * 8
    a = qc.stochastic_round(x, generator=_gen(7))
    b = qc.stochastic_round(x, generator=_gen(7))
    c = qc.stochastic_round(x, generator=_gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    g = _gen(9)
    first, second = qc.stochastic_round(x, generator=g), qc.stochastic_round(x, generator=g)
    assert not torch.equal(first, second)  # the generator advances


def test_global_rng_is_used_without_a_generator():
    x = torch.full((200,), 0.5)
    torch.manual_seed(11)
    a = qc.stochastic_round(x)
    torch.manual_seed(11)
    assert torch.equal(a, qc.stochastic_round(x))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtype_and_shape_kept_and_small_fractions_resolved(dtype):
    # 1/64 + k: a half-precision uniform draw would still resolve it, 2**-12 needs float32 draws
    frac = 2.0**-12 if dtype in (torch.float16, torch.float32, torch.float64) else 2.0**-7
    x = torch.full((2, N_DRAWS), frac, dtype=dtype)
    r = qc.stochastic_round(x, generator=_gen(12))
    assert r.dtype == dtype and r.shape == x.shape
    p = torch.tensor(frac, dtype=torch.float64)
    assert abs(float(r.double().mean()) - frac) <= float(_mc_bound(p, x.numel()))


def test_bad_input():
    with pytest.raises(TypeError, match="floating-point"):
        qc.stochastic_round(torch.arange(3))
    with pytest.raises(TypeError, match="complex"):
        qc.stochastic_round(torch.zeros(2, dtype=torch.complex64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        qc.stochastic_round([0.5])
    with pytest.raises(ValueError, match="1 NaN and 1 infinite"):
        qc.stochastic_round(torch.tensor([0.5, float("nan"), float("inf")]))
    with pytest.raises(TypeError, match="generator"):
        qc.stochastic_round(torch.zeros(2), generator=0)
    assert qc.stochastic_round(torch.zeros(0, 3)).shape == (0, 3)


# ----------------------------------------------------------------------- stochastic_cast


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cast_picks_the_neighbours_and_keeps_representable_values(dtype):
    x = torch.randn(2000, generator=_gen(13), dtype=torch.float64) * 3
    r = qc.stochastic_cast(x, dtype, generator=_gen(14))
    assert r.dtype == dtype
    lo = torch.where(x.to(dtype).double() > x,
                     torch.nextafter(x.to(dtype), torch.tensor(-math.inf, dtype=dtype)),
                     x.to(dtype))
    hi = torch.nextafter(lo, torch.tensor(math.inf, dtype=dtype))
    assert bool(((r == lo) | (r == hi)).all())
    assert bool((lo.double() <= x).all() and (x < hi.double()).all())
    exact = x.to(dtype)
    assert torch.equal(qc.stochastic_cast(exact.double(), dtype, generator=_gen(15)), exact)


def test_cast_is_unbiased_where_round_to_nearest_is_not():
    # fp16 spacing near 1000 is 0.5; 1000.1 lies 1/5 of the way up.
    x = torch.full((N_DRAWS,), 1000.1, dtype=torch.float64)
    r = qc.stochastic_cast(x, torch.float16, generator=_gen(16)).double()
    p, d = torch.tensor(0.2, dtype=torch.float64), 0.5
    assert set(r.unique().tolist()) == {1000.0, 1000.5}
    assert abs(float(r.mean()) - 1000.1) <= float(_mc_bound(p, N_DRAWS, d))
    assert abs(float(x[0].to(torch.float16)) - 1000.1) > float(_mc_bound(p, N_DRAWS, d))


def test_cast_subnormals_and_limits():
    tiny = torch.finfo(torch.float16).smallest_normal / 1024  # the smallest fp16 subnormal
    x = torch.full((N_DRAWS,), tiny * 0.25, dtype=torch.float64)
    r = qc.stochastic_cast(x, torch.float16, generator=_gen(17)).double()
    assert set(r.unique().tolist()) <= {0.0, tiny}
    assert abs(float(r.mean()) - tiny * 0.25) <= float(_mc_bound(torch.tensor(0.25), N_DRAWS, tiny))
    big = torch.tensor([65504.0, -65504.0], dtype=torch.float64)
    assert torch.equal(qc.stochastic_cast(big, torch.float16), big.half())


def test_cast_bad_input():
    with pytest.raises(ValueError, match="dtype"):
        qc.stochastic_cast(torch.zeros(2), torch.int8)
    with pytest.raises(ValueError, match="largest finite"):
        qc.stochastic_cast(torch.tensor([7e4]), torch.float16)
    with pytest.raises(ValueError, match="NaN"):
        qc.stochastic_cast(torch.tensor([float("nan")]), torch.float16)
    with pytest.raises(TypeError, match="floating-point"):
        qc.stochastic_cast(torch.arange(2), torch.float16)
    assert qc.stochastic_cast(torch.zeros(0), torch.bfloat16).dtype == torch.bfloat16


# ------------------------------------------------------------ quantize(rounding="stochastic")


def test_quantize_default_is_unchanged():
    x = torch.randn(4, 300, generator=_gen(18))
    qp = qc.symmetric_qparams(x, 8, axis=0)
    want = torch.fake_quantize_per_channel_affine(
        x, qp.scale, qp.zero_point, 0, qp.qmin, qp.qmax)
    assert torch.equal(qc.dequantize(qc.quantize(x, qp), qp), want)
    assert torch.equal(qc.quantize(x, qp, rounding="nearest"), qc.quantize(x, qp))


def test_quantize_stochastic_is_unbiased_and_stays_on_the_grid():
    qp = qc.asymmetric_qparams(torch.tensor([-1.0, 1.0]), 4)  # zero point 7, step 2/15
    x = torch.linspace(-0.9, 0.9, 37, dtype=torch.float32)  # inside the grid: no clamping
    codes = torch.stack([qc.quantize(x, qp, rounding="stochastic", generator=g)
                         for g in [_gen(19)] for _ in range(N_DRAWS // 4)]).double()
    assert codes.min() >= qp.qmin and codes.max() <= qp.qmax
    t = x.double() * float(torch.reciprocal(qp.scale)) + int(qp.zero_point)
    nearest = torch.floor(t)
    assert bool(((codes == nearest) | (codes == nearest + 1)).all())
    p = t - torch.floor(t)
    err = (codes.mean(0) - t).abs()
    assert bool((err <= _mc_bound(p, codes.shape[0]) + 1e-5).all()), err
    assert float(codes.std(0).max()) > 0.3  # really random, not a fixed rounding
    xh = qc.dequantize(qc.quantize(x, qp, rounding="stochastic", generator=_gen(20)), qp)
    assert float((xh - x).abs().max()) < float(qp.scale) * (1 + 1e-6)


def test_quantize_stochastic_per_group_and_clamps():
    x = torch.randn(3, 64, generator=_gen(21))
    qp = qc.symmetric_qparams(x, 4, group_size=16)
    q = qc.quantize(x, qp, rounding="stochastic", generator=_gen(22))
    assert q.shape == x.shape and q.dtype == torch.int8
    assert int(q.min()) >= qp.qmin and int(q.max()) <= qp.qmax
    assert torch.equal(q, qc.quantize(x, qp, rounding="stochastic", generator=_gen(22)))
    small = qc.QParams(torch.tensor(0.1), torch.tensor(0), -7, 7)
    assert qc.quantize(torch.tensor([5.0, -5.0]), small, rounding="stochastic").tolist() == [7, -7]


def test_quantize_rounding_bad_input():
    x = torch.zeros(3)
    qp = qc.symmetric_qparams(torch.ones(3), 8)
    with pytest.raises(ValueError, match="rounding"):
        qc.quantize(x, qp, rounding="up")
    with pytest.raises(ValueError, match="generator"):
        qc.quantize(x, qp, generator=_gen())
    with pytest.raises(TypeError, match="generator"):
        qc.quantize(x, qp, rounding="stochastic", generator="seed")
    with pytest.raises(ValueError, match="NaN"):
        qc.quantize(torch.tensor([float("nan")]), qp, rounding="stochastic")
    assert qc.quantize(torch.zeros(0), qp, rounding="stochastic").shape == (0,)
