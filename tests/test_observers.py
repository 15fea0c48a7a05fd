"""quantcourse.observers: oracle (PyTorch observers), property, unit and bad-input tests."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import quantcourse as qc
from quantcourse import _kl_histogram, observers

from .oracles import torch_ao

EPS32 = torch.finfo(torch.float32).eps
SAMPLE_OBSERVERS = [qc.PercentileObserver, qc.MSEObserver, qc.EntropyObserver]
ALL_OBSERVERS = [qc.MinMaxObserver, qc.MovingAverageMinMaxObserver, *SAMPLE_OBSERVERS]
GRIDS = {
    "asym": {"symmetric": False},
    "asym_signed": {"symmetric": False, "signed": True},
    "sym": {"symmetric": True},
    "sym_full": {"symmetric": True, "narrow_range": False},
}


def _batches(seed: int, n: int = 5, shape=(64, 8), shift: float = 0.0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) * (1 + k) + shift * k for k in range(n)]


def _same_qparams(a: qc.QParams, b: qc.QParams) -> None:
    assert torch.equal(a.scale, b.scale)
    assert torch.equal(a.zero_point, b.zero_point)
    assert (a.qmin, a.qmax, a.axis) == (b.qmin, b.qmax, b.axis)


# ---------------------------------------------------------------------------- oracle




# (our settings, PyTorch dtype, per-tensor qscheme, per-channel qscheme)
ORACLE_GRIDS = {
    "quint8_affine": ({"symmetric": False}, "quint8", "per_tensor_affine", "per_channel_affine"),
    "qint8_affine": ({"symmetric": False, "signed": True}, "qint8", "per_tensor_affine",
                     "per_channel_affine"),
    "qint8_symmetric": ({"symmetric": True, "narrow_range": False}, "qint8",
                        "per_tensor_symmetric", "per_channel_symmetric"),
}


def _feed_both(ours, theirs, batches):
    for b in batches:
        assert ours(b) is b
        theirs(b)
    scale, zp = theirs.calculate_qparams()
    return ours.qparams(), scale, zp


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("grid", ORACLE_GRIDS)
@pytest.mark.parametrize("moving", [False, True], ids=["minmax", "moving_average"])
@pytest.mark.parametrize("seed", range(3))
def test_per_tensor_matches_pytorch_observers_bit_for_bit(grid, moving, seed):
    kw, dtype, qscheme, _ = ORACLE_GRIDS[grid]
    c = 0.01 if seed == 0 else 0.3
    if moving:
        theirs = torch_ao("MovingAverageMinMaxObserver")(
            averaging_constant=c, dtype=getattr(torch, dtype), qscheme=getattr(torch, qscheme))
        ours = qc.MovingAverageMinMaxObserver(8, averaging_constant=c, **kw)
    else:
        theirs = torch_ao("MinMaxObserver")(
            dtype=getattr(torch, dtype), qscheme=getattr(torch, qscheme))
        ours = qc.MinMaxObserver(8, **kw)
    # batches of changing shape and offset; the last one is all positive
    batches = _batches(seed, shift=0.7 - seed) + [torch.rand(33) + 0.25]
    qp, scale, zp = _feed_both(ours, theirs, batches)
    assert torch.equal(ours.min_val, theirs.min_val) and torch.equal(ours.max_val, theirs.max_val)
    assert torch.equal(qp.scale.reshape(1), scale.reshape(1).float())
    assert int(qp.zero_point) == int(zp)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("grid", ORACLE_GRIDS)
@pytest.mark.parametrize("moving", [False, True], ids=["minmax", "moving_average"])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_per_channel_matches_pytorch_observers_bit_for_bit(grid, moving, axis):
    kw, dtype, _, qscheme = ORACLE_GRIDS[grid]
    common = {"ch_axis": axis, "dtype": getattr(torch, dtype), "qscheme": getattr(torch, qscheme)}
    if moving:
        theirs = torch_ao("MovingAveragePerChannelMinMaxObserver")(
            averaging_constant=0.05, **common)
        ours = qc.MovingAverageMinMaxObserver(8, averaging_constant=0.05, axis=axis, **kw)
    else:
        theirs = torch_ao("PerChannelMinMaxObserver")(**common)
        ours = qc.MinMaxObserver(8, axis=axis, **kw)
    g = torch.Generator().manual_seed(axis)
    # channels with very different ranges, one of them all positive
    spread = torch.tensor([0.1, 1.0, 5.0, 30.0]).reshape([-1 if d == axis else 1 for d in range(3)])
    shape = [4 if d == axis else 6 for d in range(3)]
    batches = [torch.randn(shape, generator=g) * spread + 0.5 * k for k in range(4)]
    qp, scale, zp = _feed_both(ours, theirs, batches)
    assert qp.axis == axis and qp.scale.shape == (4,)
    assert torch.equal(qp.scale, scale.float())
    assert torch.equal(qp.zero_point, zp.to(torch.int32))


# ---------------------------------------------------------------------------- outliers

BULK_N = 100_000


@pytest.fixture(scope="module")
def outlier_data():
    g = torch.Generator().manual_seed(0)
    bulk = torch.randn(BULK_N, generator=g)
    spikes = torch.tensor([50.0] * 5 + [-50.0] * 5)
    x = torch.cat([bulk, spikes])[torch.randperm(BULK_N + 10, generator=g)]
    return bulk, x


def _bulk_mse(cls, bits, sym, data):
    bulk, x = data
    obs = cls(bits, symmetric=sym)
    for b in x.split(20_000):
        obs(b)
    return qc.mse(qc.fake_quantize(bulk, obs.qparams()), bulk)


@pytest.mark.parametrize("sym", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("cls", SAMPLE_OBSERVERS, ids=lambda c: c.__name__)
def test_clipping_observers_beat_minmax_on_the_bulk_with_outliers(cls, bits, sym, outlier_data):
    minmax = _bulk_mse(qc.MinMaxObserver, bits, sym, outlier_data)
    ours = _bulk_mse(cls, bits, sym, outlier_data)
    # min-max spends its grid on ten outliers at +-50; every calibrator here clips them
    assert ours < minmax, (cls.__name__, bits, sym, ours, minmax)


def test_percentile_and_entropy_clip_far_below_the_outliers(outlier_data):
    _, x = outlier_data
    for cls in (qc.PercentileObserver, qc.EntropyObserver):
        obs = cls(8, symmetric=True)
        obs(x)
        lo, hi = obs.range()
        assert float(lo) == -float(hi)
        assert 2.5 < float(hi) < 6.0, (cls.__name__, float(hi))


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("grid", GRIDS)
def test_mse_observer_never_worse_than_minmax_on_gaussian_data(bits, grid):
    x = torch.randn(20_000, generator=torch.Generator().manual_seed(bits)) * 2 + 0.3
    errs = {}
    for cls in (qc.MinMaxObserver, qc.MSEObserver):
        obs = cls(bits, **GRIDS[grid])
        for b in x.split(5000):
            obs(b)
        errs[cls] = qc.mse(qc.fake_quantize(x, obs.qparams()), x)
    assert errs[qc.MSEObserver] <= errs[qc.MinMaxObserver] * (1 + 1e-9)
    if bits <= 4:  # at low bit widths clipping the Gaussian tails pays off clearly
        assert errs[qc.MSEObserver] < 0.9 * errs[qc.MinMaxObserver]


finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)
value_lists = st.lists(finite, min_size=1, max_size=48)


@given(st.lists(value_lists, min_size=1, max_size=4), st.integers(2, 8),
       st.sampled_from(list(GRIDS)))
def test_mse_observer_property_never_worse_than_minmax(batches, bits, grid):
    mm = qc.MinMaxObserver(bits, **GRIDS[grid])
    ms = qc.MSEObserver(bits, num_candidates=40, **GRIDS[grid])
    for b in batches:
        t = torch.tensor(b)
        mm(t)
        ms(t)
    x = torch.tensor([v for b in batches for v in b])
    e_mm = qc.mse(qc.fake_quantize(x, mm.qparams()), x)
    e_ms = qc.mse(qc.fake_quantize(x, ms.qparams()), x)
    assert e_ms <= e_mm * (1 + 1e-9) + 1e-30


# ---------------------------------------------------------------------------- unit


@given(st.lists(value_lists, min_size=1, max_size=5), st.sampled_from(list(GRIDS)))
def test_running_minmax_equals_minmax_of_concatenation(batches, grid):
    obs = qc.MinMaxObserver(8, **GRIDS[grid])
    for b in batches:
        obs(torch.tensor(b))
    x = torch.tensor([v for b in batches for v in b])
    lo, hi = obs.range()
    assert float(lo) == float(x.min()) and float(hi) == float(x.max())
    make = qc.symmetric_qparams if GRIDS[grid]["symmetric"] else qc.asymmetric_qparams
    kw = {k: v for k, v in GRIDS[grid].items() if k != "symmetric"}
    _same_qparams(obs.qparams(), make(x, 8, **kw))


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("grid", GRIDS)
def test_per_channel_minmax_equals_affine_per_channel_on_the_concatenation(axis, grid):
    batches = [torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(k)) * (k + 1)
               for k in range(3)]
    obs = qc.MinMaxObserver(6, axis=axis, **GRIDS[grid])
    for b in batches:
        obs(b)
    ax = axis % 3
    x = torch.cat(batches, dim=0 if ax != 0 else 1)
    make = qc.symmetric_qparams if GRIDS[grid]["symmetric"] else qc.asymmetric_qparams
    kw = {k: v for k, v in GRIDS[grid].items() if k != "symmetric"}
    qp = obs.qparams()
    assert qp.scale.shape == (x.shape[ax],) and qp.axis == ax and qp.granularity == "channel"
    assert obs.range()[0].shape == (x.shape[ax],)
    _same_qparams(qp, make(x, 6, axis=ax, **kw))
    assert qc.fake_quantize(x, qp).shape == x.shape


def test_moving_average_rule_by_hand():
    obs = qc.MovingAverageMinMaxObserver(8, averaging_constant=0.25)
    obs(torch.tensor([-1.0, 0.5, 2.0]))
    assert obs.range() == (torch.tensor(-1.0), torch.tensor(2.0))
    obs(torch.tensor([-5.0, 6.0]))
    lo, hi = obs.range()
    assert float(lo) == -1.0 + 0.25 * (-5.0 + 1.0) == -2.0
    assert float(hi) == 2.0 + 0.25 * (6.0 - 2.0) == 3.0
    # the moving average may sit inside the latest batch's range: a running min-max cannot
    assert float(lo) > -5.0 and float(hi) < 6.0
    per_channel = qc.MovingAverageMinMaxObserver(8, averaging_constant=0.5, axis=1)
    per_channel(torch.tensor([[0.0, -2.0], [1.0, 4.0]]))
    per_channel(torch.tensor([[-4.0, 0.0], [3.0, 0.0]]))
    lo, hi = per_channel.range()
    assert lo.tolist() == [-2.0, -1.0] and hi.tolist() == [2.0, 2.0]


def test_averaging_constant_one_keeps_only_the_last_batch():
    obs = qc.MovingAverageMinMaxObserver(8, averaging_constant=1.0)
    obs(torch.tensor([-9.0, 9.0]))
    obs(torch.tensor([-1.0, 3.0]))
    assert [float(v) for v in obs.range()] == [-1.0, 3.0]


@pytest.mark.parametrize("grid", GRIDS)
def test_percentile_100_equals_minmax(grid):
    obs = qc.PercentileObserver(8, percentile=100.0, **GRIDS[grid])
    mm = qc.MinMaxObserver(8, **GRIDS[grid])
    for b in _batches(1, shift=0.4):
        obs(b)
        mm(b)
    _same_qparams(obs.qparams(), mm.qparams())


def test_percentile_values_by_hand():
    x = torch.arange(-100.0, 101.0)  # -100 .. 100, 201 values
    asym = qc.PercentileObserver(8, percentile=90.0)
    asym(x)
    lo, hi = asym.range()
    assert float(lo) == pytest.approx(-80.0) and float(hi) == pytest.approx(80.0)
    sym = qc.PercentileObserver(8, percentile=90.0, symmetric=True)
    sym(x)
    lo, hi = sym.range()
    assert float(hi) == pytest.approx(90.0) and float(lo) == -float(hi)  # |x|: 0,1,1,...,100,100


def test_reservoir_keeps_a_uniform_sample_once_full():
    obs = qc.PercentileObserver(8, max_samples=1000, seed=3)
    data = torch.arange(20_000.0)
    for b in data.split(1500):
        obs(b)
    s = obs.samples
    assert s.shape == (1000,) and obs.num_seen == 20_000
    assert len(set(s.tolist())) == 1000  # distinct values: each slot holds one observed value
    assert bool((s >= 0).all() and (s < 20_000).all()) and torch.equal(s, s.round())
    # uniform over everything seen: about 1/4 of the sample from each quarter of the stream
    counts = torch.histc(s, bins=4, min=0, max=20_000)
    assert bool((counts > 180).all()), counts
    # exact extremes are tracked apart from the sample
    assert float(obs.min_val) == 0.0 and float(obs.max_val) == 19_999.0
    again = qc.PercentileObserver(8, max_samples=1000, seed=3)
    for b in data.split(1500):
        again(b)
    assert torch.equal(again.samples, s)  # seeded: reproducible


def test_samples_are_copies_of_the_batches():
    obs = qc.MSEObserver(8)
    x = torch.tensor([1.0, 2.0, 3.0])
    obs(x)
    x.mul_(100)  # a caller reusing its buffer must not change what was observed
    assert obs.samples.tolist() == [1.0, 2.0, 3.0]


def _reference_kl(hist, levels):
    """TensorRT's calibration loop written out literally, bin by bin, in float64."""
    h = hist.double().tolist()
    out = []
    for i in range(levels, len(h) + 1):
        p = h[:i]
        p[-1] += sum(h[i:])
        m = i // levels
        q = [0.0] * i
        for j in range(levels):
            s, e = j * m, (i if j == levels - 1 else (j + 1) * m)
            nz = [k for k in range(s, e) if p[k] > 0]
            for k in nz:
                q[k] = sum(h[s:e]) / len(nz)
        ps, qs = sum(p), sum(q)
        kl = 0.0
        for pk, qk in zip(p, q, strict=True):
            if pk > 0:
                if qk == 0:
                    kl = math.inf
                    break
                kl += pk / ps * math.log((pk / ps) / (qk / qs))
        out.append(kl)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_kl_matches_the_literal_loop(seed):
    g = torch.Generator().manual_seed(seed)
    bins, levels = 48, [4, 5, 8][seed % 3]
    hist = torch.poisson(torch.exp(-torch.arange(bins) / 8.0) * 50, generator=g)
    hist[torch.rand(bins, generator=g) < 0.3] = 0  # empty bins, including some at the end
    hist[-1] += seed % 2  # sometimes an outlier in the very last bin
    if hist.sum() == 0:
        hist[0] = 1
    cand, kl = _kl_histogram.kl_divergences(hist, levels)
    ref = torch.tensor(_reference_kl(hist, levels), dtype=torch.float64)
    assert cand.tolist() == list(range(levels, bins + 1))
    assert torch.equal(torch.isinf(kl), torch.isinf(ref))
    fin = torch.isfinite(ref)
    assert torch.allclose(kl[fin], ref[fin], rtol=1e-9, atol=1e-12)


def test_entropy_threshold_is_a_bin_edge_within_range():
    x = torch.randn(50_000, generator=torch.Generator().manual_seed(4))
    obs = qc.EntropyObserver(8)
    obs(x)
    amax = float(x.abs().max())
    lo, hi = obs.range()
    t = float(hi)
    assert float(lo) == -t and amax * 128 / 2048 <= t <= amax
    k = t / amax * 2048
    assert abs(k - round(k)) < 1e-3
    assert obs.qparams().zero_point.item() == 0 and obs.symmetric  # symmetric by default


def test_entropy_asymmetric_one_signed_data_uses_the_whole_grid():
    x = torch.randn(20_000, generator=torch.Generator().manual_seed(5)).abs()  # ReLU-like
    obs = qc.EntropyObserver(8, symmetric=False)
    obs(x)
    assert obs._levels() == 256
    lo, hi = obs.range()
    assert float(lo) == float(x.min()) and 0 < float(hi) <= float(x.max())  # 0 joins in qparams
    assert int(obs.qparams().zero_point) == 0


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("cls", ALL_OBSERVERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("value", [0.0, 3.0, -0.7])
def test_constant_and_zero_batches_give_finite_qparams(cls, grid, value):
    obs = cls(8, **GRIDS[grid])
    x = torch.full((64,), value)
    obs(x)
    obs(x)
    qp = obs.qparams()
    assert bool(torch.isfinite(qp.scale).all()) and float(qp.scale) >= EPS32
    assert qp.qmin <= int(qp.zero_point) <= qp.qmax
    err = (qc.fake_quantize(x, qp) - x).abs().max()
    assert float(err) <= float(qp.scale) / 2 * (1 + 1e-5) + 4 * EPS32 * abs(value)


def test_qparams_from_range_follows_affine_conventions():
    lo, hi = torch.tensor(0.5), torch.tensor(3.0)  # all positive: widened to include 0
    qp = observers.qparams_from_range(lo, hi, 8)
    _same_qparams(qp, qc.asymmetric_qparams(torch.tensor([0.5, 3.0]), 8))
    assert int(qp.zero_point) == 0
    qp = observers.qparams_from_range(torch.tensor(-4.0), hi, 4, symmetric=True)
    assert float(qp.scale) == pytest.approx(4.0 / 7) and int(qp.zero_point) == 0
    qp = observers.qparams_from_range(torch.zeros(()), torch.zeros(()), 8)
    assert float(qp.scale) == EPS32
    pc = observers.qparams_from_range(torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 2.0]), 8,
                                      axis=1)
    assert pc.axis == 1 and pc.scale.shape == (2,)
    with pytest.raises(ValueError, match="lo must not exceed hi"):
        observers.qparams_from_range(torch.tensor(1.0), torch.tensor(0.0))
    with pytest.raises(ValueError, match="0-d"):
        observers.qparams_from_range(torch.zeros(2), torch.ones(2))
    with pytest.raises(ValueError, match="NaN"):
        observers.qparams_from_range(torch.tensor(-math.inf), torch.tensor(1.0))


def test_call_returns_its_input_and_works_as_a_forward_hook():
    layer = torch.nn.Linear(4, 3)
    obs = qc.MinMaxObserver(8, axis=1)
    handle = layer.register_forward_hook(lambda m, inp, out: obs(out))
    x = torch.randn(5, 4)
    y = layer(x)
    handle.remove()
    assert y.requires_grad  # the hook leaves the graph intact
    lo, hi = obs.range()
    assert torch.equal(lo, y.detach().amin(0)) and torch.equal(hi, y.detach().amax(0))
    y.sum().backward()  # and autograd still works through the observed output
    assert layer.weight.grad is not None


def test_range_is_recomputed_after_new_batches_and_reset_forgets():
    obs = qc.PercentileObserver(8, percentile=100.0)
    obs(torch.tensor([-1.0, 1.0]))
    assert float(obs.range()[1]) == 1.0
    obs(torch.tensor([5.0]))
    assert float(obs.range()[1]) == 5.0 and obs.num_batches == 2
    obs.reset()
    assert obs.num_batches == 0 and obs.min_val is None
    with pytest.raises(RuntimeError, match="no data observed"):
        obs.qparams()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_float_dtypes(dtype):
    x = torch.randn(100, generator=torch.Generator().manual_seed(0)).to(dtype)
    for cls in ALL_OBSERVERS:
        obs = cls(8)
        obs(x)
        assert obs.qparams().scale.dtype == torch.float32
    mm = qc.MinMaxObserver(8)
    mm(x)
    _same_qparams(mm.qparams(), qc.asymmetric_qparams(x, 8))


def test_repr_names_the_settings():
    r = repr(qc.MovingAverageMinMaxObserver(4, symmetric=True, axis=0))
    assert "bits=4" in r and "symmetric" in r and "axis=0" in r and "averaging_constant" in r


def test_on_device(device):
    x = torch.randn(1000, device=device)
    for cls in ALL_OBSERVERS:
        obs = cls(8, symmetric=True)
        obs(x)
        qp = obs.qparams()
        assert qp.scale.device == x.device
        assert qc.fake_quantize(x, qp).device == x.device
    pc = qc.MinMaxObserver(8, axis=0)
    pc(x.reshape(10, 100))
    assert pc.qparams().scale.device == x.device


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("cls", ALL_OBSERVERS, ids=lambda c: c.__name__)
def test_nan_and_inf_batches_are_rejected_with_counts_and_change_nothing(cls):
    obs = cls(8)
    obs(torch.tensor([-1.0, 2.0]))
    before = obs.qparams()
    bad = torch.tensor([1.0, math.nan, math.inf, -math.inf, math.nan, 0.5])
    with pytest.raises(ValueError, match=r"2 NaN and 2 infinite value\(s\) out of 6"):
        obs(bad)
    assert obs.num_batches == 1
    _same_qparams(obs.qparams(), before)


@pytest.mark.parametrize("cls", ALL_OBSERVERS, ids=lambda c: c.__name__)
def test_qparams_before_any_data_is_a_clear_error(cls):
    obs = cls(8)
    with pytest.raises(RuntimeError, match="no data observed yet"):
        obs.qparams()
    obs(torch.empty(0))  # empty batches are ignored
    obs(torch.empty(3, 0))
    assert obs.num_batches == 0
    with pytest.raises(RuntimeError, match="no data observed yet"):
        obs.range()


def test_empty_batches_are_ignored_after_data():
    obs = qc.MovingAverageMinMaxObserver(8, averaging_constant=0.5)
    obs(torch.tensor([-1.0, 1.0]))
    obs(torch.empty(0))
    assert obs.num_batches == 1 and [float(v) for v in obs.range()] == [-1.0, 1.0]


@pytest.mark.parametrize("cls", ALL_OBSERVERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("bad", [torch.arange(4), torch.ones(3, dtype=torch.bool),
                                 torch.ones(2, dtype=torch.complex64), [1.0, 2.0]],
                         ids=["int", "bool", "complex", "list"])
def test_non_float_input_is_a_type_error(cls, bad):
    with pytest.raises(TypeError, match="observe"):
        cls(8)(bad)


@pytest.mark.parametrize("cls", [qc.MinMaxObserver, qc.MovingAverageMinMaxObserver])
def test_per_channel_shape_changes_are_rejected(cls):
    obs = cls(8, axis=1)
    obs(torch.randn(2, 3))
    obs(torch.randn(7, 3))  # a different batch size is fine
    with pytest.raises(ValueError, match="channel count along axis 1 changed: first batch 3, this batch 4"):
        obs(torch.randn(2, 4))
    with pytest.raises(ValueError, match="number of dimensions"):
        obs(torch.randn(2, 3, 1))
    with pytest.raises(ValueError, match="out of range"):
        cls(8, axis=2)(torch.randn(2, 3))
    with pytest.raises(ValueError, match="0-d"):
        cls(8, axis=0)(torch.tensor(1.0))
    assert obs.num_batches == 2


@pytest.mark.parametrize("cls", SAMPLE_OBSERVERS, ids=lambda c: c.__name__)
def test_histogram_observers_are_per_tensor_only(cls):
    with pytest.raises(ValueError, match="per-tensor only, got axis=0"):
        cls(8, axis=0)


@pytest.mark.parametrize(
    "make, exc, msg",
    [
        (lambda: qc.MinMaxObserver(0), ValueError, "bits must be between 1 and 16"),
        (lambda: qc.MinMaxObserver(1, symmetric=True), ValueError, "between 2 and 16"),
        (lambda: qc.MinMaxObserver(17), ValueError, "between"),
        (lambda: qc.MinMaxObserver(8, symmetric=1), TypeError, "symmetric must be True or False"),
        (lambda: qc.MinMaxObserver(8, axis=1.0), TypeError, "axis must be an int"),
        (lambda: qc.MovingAverageMinMaxObserver(averaging_constant=0.0), ValueError, r"\(0, 1\]"),
        (lambda: qc.MovingAverageMinMaxObserver(averaging_constant=1.5), ValueError, r"\(0, 1\]"),
        (lambda: qc.MovingAverageMinMaxObserver(averaging_constant=math.nan), ValueError, "finite"),
        (lambda: qc.PercentileObserver(percentile=40), ValueError, "between 50 and 100"),
        (lambda: qc.PercentileObserver(percentile="99"), TypeError, "number"),
        (lambda: qc.MSEObserver(num_candidates=0), ValueError, "num_candidates"),
        (lambda: qc.MSEObserver(max_samples=0), ValueError, "max_samples"),
        (lambda: qc.MSEObserver(max_samples=2**25), ValueError, "max_samples"),
        (lambda: qc.EntropyObserver(8, num_bins=64), ValueError, "num_bins"),
        (lambda: qc.EntropyObserver(8, symmetric=False, num_bins=128), ValueError, "256"),
    ],
)
def test_bad_settings_fail_at_construction(make, exc, msg):
    with pytest.raises(exc, match=msg):
        make()


def test_batches_on_another_device_are_rejected():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    obs = qc.MinMaxObserver(8)
    obs(torch.randn(4))
    with pytest.raises(ValueError, match="live on cpu"):
        obs(torch.randn(4, device="cuda"))


def test_constructor_signatures_list_every_keyword_with_its_default():
    import inspect

    grid = {"symmetric": False, "signed": False, "narrow_range": True, "axis": None}
    sampling = {"max_samples": 1 << 20, "seed": 0}
    expected = {
        qc.MinMaxObserver: grid,
        qc.MovingAverageMinMaxObserver: {"averaging_constant": 0.01, **grid},
        qc.PercentileObserver: {"percentile": 99.99, **sampling, **grid},
        qc.MSEObserver: {"num_candidates": 100, **sampling, **grid},
        qc.EntropyObserver: {"num_bins": 2048, **sampling, **grid, "symmetric": True},
    }
    for cls, keywords in expected.items():
        params = inspect.signature(cls).parameters
        assert params["bits"].default == 8
        got = {k: p.default for k, p in params.items() if p.kind is p.KEYWORD_ONLY}
        assert got == keywords, cls.__name__
    with pytest.raises(TypeError, match="unexpected keyword argument 'percentil'"):
        qc.PercentileObserver(8, percentil=99.0)
