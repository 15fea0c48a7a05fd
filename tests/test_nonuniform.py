"""Non-uniform quantization: log / power-of-two levels, k-means codebooks, NF4."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import quantcourse as qc

# The 16 NF4 values as published with QLoRA (bitsandbytes' NF4 table).
NF4_PUBLISHED = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
]

finite_floats = st.floats(-100, 100, allow_nan=False, allow_infinity=False, width=32)


def _vectors(min_size=1, max_size=200):
    return st.lists(finite_floats, min_size=min_size, max_size=max_size).map(
        lambda v: torch.tensor(v, dtype=torch.float32))


# --------------------------------------------------------------------------- log


def test_log_levels_by_hand():
    assert qc.log_levels(3).tolist() == [0.0, 0.25, 0.5, 1.0]
    assert qc.log_levels(4).tolist() == [0, 1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1]
    half = qc.log_levels(3, frac_bits=1)
    assert torch.allclose(half, torch.tensor([0, 0.5, 2**-0.5, 1]))


def test_log_quantize_hand_vector():
    w = torch.tensor([1.0, -0.5, 0.3, 0.37, 0.2, -0.12, 0.125, 0.0])
    q = qc.log_quantize(w, 3)
    # levels 0, 0.25, 0.5, 1; 0.37 is nearer 0.25 than 0.5 (0.375 is the midpoint)
    assert q.codes.tolist() == [3, -2, 1, 1, 1, 0, 0, 0]
    assert q.dequantize().tolist() == [1.0, -0.5, 0.25, 0.25, 0.25, 0.0, 0.0, 0.0]
    assert q.codes.dtype == torch.int8 and float(q.scale) == 1.0


def test_log_quantize_is_power_of_two_times_scale():
    w = torch.randn(8, 32, generator=torch.Generator().manual_seed(0))
    q = qc.log_quantize(w, 4, axis=0)
    ratio = (q.dequantize() / q.scale[:, None]).abs()
    nz = ratio[ratio > 0]
    assert torch.equal(torch.exp2(torch.round(torch.log2(nz))), nz)
    assert q.scale.shape == (8,) and q.nbytes == 8 * 32 * 4 // 8 + 4 * 8


@settings(max_examples=60, deadline=None)
@given(_vectors(), st.integers(2, 6), st.integers(0, 2))
def test_log_quantize_picks_the_nearest_level(w, bits, frac):
    q = qc.log_quantize(w, bits, frac_bits=frac)
    levels = qc.log_levels(bits, frac_bits=frac).double() * float(q.scale)
    err = (q.dequantize().double() - w.double()).abs()
    best = (w.double().abs()[:, None] - levels[None, :]).abs().min(dim=1).values
    assert torch.all(err <= best + 1e-6 * float(q.scale))
    assert int(q.codes.abs().max()) <= 2 ** (bits - 1) - 1
    assert torch.all(torch.sign(q.dequantize()) * torch.sign(w) >= 0)


# --------------------------------------------------------------------------- k-means


def test_kmeans_finds_obvious_clusters():
    w = torch.tensor([-1.0, -1.1, -0.9, 2.0, 2.1, 1.9, 0.01, -0.01])
    q = qc.kmeans_quantize(w, 2, init="linear")
    assert q.codebook.shape == (4,)
    assert torch.allclose(q.dequantize(), torch.tensor([-1.0, -1.0, -1.0, 2.0, 2.0, 2.0, 0.0, 0.0]),
                          atol=0.11)
    assert q.codes.dtype == torch.uint8 and q.nbytes == 2 + 4 * 4


def test_kmeans_lloyd_fixed_point_by_hand():
    # linear init at 1 bit: centroids 0 and 10; {0, 1, 2} and {10}; means 1 and 10
    w = torch.tensor([0.0, 1.0, 2.0, 10.0])
    q = qc.kmeans_quantize(w, 1, init="linear")
    assert q.codebook.tolist() == [1.0, 10.0]
    assert q.codes.tolist() == [0, 0, 0, 1]


def test_kmeans_beats_uniform_on_gaussian_weights():
    w = torch.randn(4096, generator=torch.Generator().manual_seed(1))
    km = qc.kmeans_quantize(w, 3)
    qp = qc.symmetric_qparams(w, 3)
    assert qc.mse(w, km.dequantize()) < 0.6 * qc.mse(w, qc.fake_quantize(w, qp))


def test_kmeans_is_deterministic_and_seeded():
    w = torch.randn(16, 300, generator=torch.Generator().manual_seed(2))
    a = qc.kmeans_quantize(w, 3, axis=0, seed=5)
    b = qc.kmeans_quantize(w, 3, axis=0, seed=5)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.codebook, b.codebook)
    state = torch.get_rng_state()
    qc.kmeans_quantize(w, 3, seed=1)
    assert torch.equal(state, torch.get_rng_state()), "the global RNG must stay untouched"
    c = qc.kmeans_quantize(w, 3, axis=0, seed=6, iters=0)
    d = qc.kmeans_quantize(w, 3, axis=0, seed=5, iters=0)
    assert not torch.equal(c.codebook, d.codebook), "the seed must change k-means++ seeding"


def test_kmeans_per_channel_matches_row_by_row():
    w = torch.randn(5, 3, 40, generator=torch.Generator().manual_seed(3))
    q = qc.kmeans_quantize(w, 2, axis=1, init="linear")
    assert q.codebook.shape == (3, 4) and q.codes.shape == w.shape
    for c in range(3):
        qr = qc.kmeans_quantize(w[:, c].contiguous(), 2, init="linear")
        assert torch.allclose(q.codebook[c], qr.codebook, atol=1e-6)
        assert torch.equal(q.dequantize()[:, c], qr.dequantize())
    assert q.nbytes == math.ceil(w.numel() * 2 / 8) + 4 * 12


@settings(max_examples=60, deadline=None)
@given(_vectors(2, 300), st.integers(1, 4), st.sampled_from(["kmeans++", "linear"]))
def test_kmeans_codes_are_nearest_and_sorted(w, bits, init):
    q = qc.kmeans_quantize(w, bits, init=init)
    book = q.codebook.double()
    assert torch.all(book[1:] >= book[:-1])
    err = (q.dequantize().double() - w.double()).abs()
    best = (w.double()[:, None] - book[None, :]).abs().min(dim=1).values
    assert torch.allclose(err, best, atol=1e-9)
    # Lloyd never makes the error worse than its initialisation
    q0 = qc.kmeans_quantize(w, bits, init=init, iters=0)
    assert qc.mse(w, q.dequantize()) <= qc.mse(w, q0.dequantize()) * (1 + 1e-6) + 1e-12


def test_finetune_codebooks_sums_shared_gradients_and_helps():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    x = torch.randn(256, 4)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    quant = {n: qc.kmeans_quantize(p.detach(), 1) for n, p in model.named_parameters()
             if p.ndim == 2}

    def loss(books):
        w = {n: q.dequantize() for n, q in books.items()}
        with torch.no_grad():
            out = torch.func.functional_call(model, {**dict(model.named_parameters()), **w}, (x,))
        return float(torch.nn.functional.cross_entropy(out, y))

    tuned = qc.finetune_codebooks(model, quant, x, y, steps=60, lr=0.02, batch_size=256)
    assert loss(tuned) < loss(quant)
    for n in quant:
        assert torch.equal(tuned[n].codes, quant[n].codes)
    # one step of plain gradient on the lookup equals the summed per-weight gradient
    q = quant["0.weight"]
    book = q.codebook.clone().requires_grad_(True)
    g = torch.randn(q.codes.shape)
    (book[q.codes.long()] * g).sum().backward()
    manual = torch.zeros(2).index_add_(0, q.codes.reshape(-1).long(), g.reshape(-1))
    assert torch.allclose(book.grad, manual)


# --------------------------------------------------------------------------- NF4


def test_nf4_levels_match_the_published_table():
    levels = qc.nf4_levels()
    assert levels.dtype == torch.float32 and levels.shape == (16,)
    assert torch.allclose(levels, torch.tensor(NF4_PUBLISHED), atol=1e-6, rtol=0)
    assert float(levels[7]) == 0.0 and float(levels[0]) == -1.0 and float(levels[-1]) == 1.0
    assert int((levels > 0).sum()) == 8 and int((levels < 0).sum()) == 7


def test_nf4_quantize_hand_block():
    w = torch.zeros(64)
    w[0], w[1], w[2], w[3] = 2.0, -2.0, 1.0, 0.1
    q = qc.nf4_quantize(w)
    # 1.0 / 2.0 = 0.5 is nearer 0.4407 (code 12) than 0.5626; 0.05 is nearer 0.0796 than 0
    assert q.codes[:4].tolist() == [15, 0, 12, 8] and int(q.codes[4]) == 7
    expect = torch.tensor([2.0, -2.0, 2 * NF4_PUBLISHED[12], 2 * NF4_PUBLISHED[8]])
    assert torch.allclose(q.dequantize()[:4], expect)
    assert q.nbytes == 32 + 4 and q.bits_per_weight == 4.5


def test_nf4_bits_per_weight_with_double_quant():
    w = torch.randn(256 * 64 * 4, generator=torch.Generator().manual_seed(4))
    plain = qc.nf4_quantize(w)
    dq = qc.nf4_quantize(w, double_quant=True)
    assert plain.bits_per_weight == 4.5
    # 4 + 8/64 + 32/(64*256) + one float32 mean over the tensor
    assert dq.bits_per_weight == pytest.approx(4 + 8 / 64 + 32 / (64 * 256) + 32 / w.numel())
    assert qc.sqnr_db(w, dq.dequantize()) > qc.sqnr_db(w, plain.dequantize()) - 0.1
    assert (dq.block_scales() - plain.absmax).abs().max() < 0.02 * plain.absmax.max()


@settings(max_examples=50, deadline=None)
@given(_vectors(1, 300), st.sampled_from([16, 64, 256]), st.booleans())
def test_nf4_error_is_bounded_by_the_block_scale(w, block, dq):
    q = qc.nf4_quantize(w, block_size=block, double_quant=dq)
    assert q.codes.shape == w.shape and int(q.codes.max()) <= 15
    levels = qc.nf4_levels()
    gap = float((levels[1:] - levels[:-1]).max())
    n = w.numel()
    pad = (-n) % block
    absmax = torch.cat([w.abs(), w.new_zeros(pad)]).reshape(-1, block).amax(1)
    bound = (absmax * (gap / 2) + 0.02 * absmax + 1e-6).repeat_interleave(block)[:n]
    assert torch.all((q.dequantize() - w).abs() <= bound)


# --------------------------------------------------------------------------- shapes, bad input


@pytest.mark.parametrize("fn", [
    lambda w: qc.log_quantize(w, 4), lambda w: qc.kmeans_quantize(w, 2),
    lambda w: qc.nf4_quantize(w), lambda w: qc.kmeans_quantize(w, 2, axis=0),
])
def test_empty_and_shapes(fn):
    out = fn(torch.empty(0, 3))
    assert out.dequantize().shape == (0, 3)
    w = torch.randn(3, 5, 7)
    assert fn(w).dequantize().shape == w.shape


@pytest.mark.parametrize("call, exc, match", [
    (lambda: qc.log_quantize(torch.tensor([1.0, float("nan")]), 4), ValueError, "1 NaN"),
    (lambda: qc.kmeans_quantize(torch.tensor([float("inf"), 1.0]), 2), ValueError, "infinite"),
    (lambda: qc.nf4_quantize(torch.tensor([[1.0, float("nan")]])), ValueError, r"index \(0, 1\)"),
    (lambda: qc.log_quantize(torch.ones(3), 1), ValueError, "bits"),
    (lambda: qc.log_quantize(torch.ones(3), 4, frac_bits=9), ValueError, "frac_bits"),
    (lambda: qc.kmeans_quantize(torch.ones(3), 9), ValueError, "bits"),
    (lambda: qc.kmeans_quantize(torch.ones(3), 2, init="random"), ValueError, "init"),
    (lambda: qc.kmeans_quantize(torch.ones(3, 2), 2, axis=2), ValueError, "axis"),
    (lambda: qc.nf4_quantize(torch.ones(3), block_size=48), ValueError, "power of two"),
    (lambda: qc.nf4_quantize(torch.ones(3), block_size=8), ValueError, "block_size"),
    (lambda: qc.log_quantize(torch.ones(3, dtype=torch.int32), 4), TypeError, "floating"),
    (lambda: qc.kmeans_quantize(torch.ones(3, dtype=torch.complex64), 2), TypeError, "complex"),
    (lambda: qc.nf4_quantize([1.0, 2.0]), TypeError, "torch.Tensor"),
])
def test_bad_input_fails_clearly(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_constant_and_zero_tensors_are_safe():
    for w in (torch.zeros(100), torch.full((100,), 0.3)):
        for q in (qc.log_quantize(w, 4), qc.kmeans_quantize(w, 3), qc.nf4_quantize(w),
                  qc.nf4_quantize(w, double_quant=True)):
            out = q.dequantize()
            assert torch.isfinite(out).all() and torch.allclose(out, w, atol=1e-6)
