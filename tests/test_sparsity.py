"""Tests for quantcourse.sparsity: pruning masks, sparse byte counts, the distillation loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import quantcourse as qc

# ---------------------------------------------------------------- magnitude pruning


def test_magnitude_mask_by_hand():
    w = torch.tensor([0.3, -1.2, 0.05, 0.8, -0.1])
    assert qc.magnitude_mask(w, 0.4).tolist() == [True, True, False, True, False]
    assert torch.equal(qc.magnitude_prune(w, 0.6), torch.tensor([0.0, -1.2, 0.0, 0.8, 0.0]))
    assert qc.magnitude_mask(w, 0.0).all()


def test_magnitude_mask_floor_and_ties_in_index_order():
    w = torch.tensor([1.0, -1.0, 1.0, 1.0])
    # floor(0.5 * 4) = 2 removed; equal magnitudes go in index order
    assert qc.magnitude_mask(w, 0.5).tolist() == [False, False, True, True]
    # floor(0.3 * 5) = 1 removed
    assert int((~qc.magnitude_mask(torch.arange(1.0, 6.0), 0.3)).sum()) == 1


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 300), st.floats(0.0, 0.999), st.integers(0, 2**31 - 1))
def test_magnitude_mask_counts_and_order(numel, sparsity, seed):
    w = torch.randn(numel, generator=torch.Generator().manual_seed(seed))
    mask = qc.magnitude_mask(w, sparsity)
    assert int((~mask).sum()) == math.floor(sparsity * numel)
    if mask.any() and (~mask).any():
        assert float(w[~mask].abs().max()) <= float(w[mask].abs().min())


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan")])
def test_sparsity_outside_range_raises(bad):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        qc.magnitude_mask(torch.randn(10), bad)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        qc.prune_masks(qc.digits_cnn(), bad)


def test_pruning_rejects_bad_tensors():
    with pytest.raises(TypeError):
        qc.magnitude_mask(torch.arange(10), 0.5)
    with pytest.raises(ValueError, match="NaN"):
        qc.magnitude_mask(torch.tensor([1.0, float("nan")]), 0.5)
    with pytest.raises(TypeError):
        qc.magnitude_mask(torch.randn(4), True)


# ---------------------------------------------------------------- N:M


def test_nm_prune_by_hand():
    row = torch.tensor([[0.9, -0.1, 0.4, -0.7, 0.05, 0.2, -0.3, 0.01]])
    want = torch.tensor([[0.9, 0.0, 0.0, -0.7, 0.0, 0.2, -0.3, 0.0]])
    assert torch.equal(qc.nm_prune(row, n=2, m=4), want)
    want12 = torch.tensor([[0.9, 0.0, 0.0, -0.7, 0.0, 0.2, -0.3, 0.0]])
    assert torch.equal(qc.nm_prune(row, n=1, m=2), want12)
    assert torch.equal(qc.nm_prune(row, n=1, m=4), torch.tensor([[0.9, 0, 0, 0, 0, 0, -0.3, 0]]))


def test_nm_groups_run_along_the_inputs_of_each_row():
    w = torch.randn(6, 3, 2, 2)  # 12 inputs per output row
    mask = qc.nm_mask(w, 2, 4)
    groups = mask.reshape(6, 3, 4)
    assert bool((groups.sum(-1) == 2).all())
    # the kept two are the largest of their group
    mag = w.abs().reshape(6, 3, 4)
    kept_min = torch.where(groups, mag, torch.inf).amin(-1)
    dropped_max = torch.where(groups, -torch.inf, mag).amax(-1)
    assert bool((kept_min >= dropped_max).all())


def test_nm_bad_input():
    with pytest.raises(ValueError, match="n <= m"):
        qc.nm_mask(torch.randn(4, 8), 3, 2)
    with pytest.raises(ValueError, match="does not divide"):
        qc.nm_mask(torch.randn(4, 9), 2, 4)
    with pytest.raises(ValueError, match="positive"):
        qc.nm_mask(torch.randn(4, 8), 0, 4)


# ---------------------------------------------------------------- whole models


def test_prune_masks_global_versus_layer():
    cnn = qc.digits_cnn()
    layers = ("conv2", "fc1", "fc2")
    g = qc.prune_masks(cnn, 0.8, layers=layers)
    per = qc.prune_masks(cnn, 0.8, scope="layer", layers=layers)
    total = sum(m.numel() for m in g.values())
    assert sum(int((~m).sum()) for m in g.values()) == math.floor(0.8 * total)
    for k, m in per.items():
        assert int((~m).sum()) == math.floor(0.8 * m.numel()), k
    # one global threshold: every removed weight is no larger than every kept one
    ws = {k: dict(cnn.named_parameters())[k].detach() for k in g}
    removed = torch.cat([ws[k][~g[k]].abs() for k in g])
    kept = torch.cat([ws[k][g[k]].abs() for k in g])
    assert float(removed.max()) <= float(kept.min())
    assert set(qc.prune_masks(cnn, 0.5)) == {"conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"}


def test_prune_masks_nm_and_argument_errors():
    cnn = qc.digits_cnn()
    masks = qc.prune_masks(cnn, n=2, m=4, layers=("fc1",))
    assert float(masks["fc1.weight"].float().mean()) == 0.5
    with pytest.raises(ValueError, match="does not divide"):
        qc.prune_masks(cnn, n=2, m=4)  # conv1 has 9 inputs per filter
    with pytest.raises(ValueError, match="both n and m"):
        qc.prune_masks(cnn, n=2)
    with pytest.raises(ValueError, match="not both"):
        qc.prune_masks(cnn, 0.5, n=2, m=4)
    with pytest.raises(ValueError, match="scope"):
        qc.prune_masks(cnn, 0.5, scope="row")
    with pytest.raises(ValueError, match="no parameter"):
        qc.prune_masks(cnn, 0.5, layers=("fc9",))


def test_apply_masks_returns_a_pruned_copy():
    cnn = qc.digits_cnn()
    masks = qc.prune_masks(cnn, 0.7, layers=("fc1",))
    pruned = qc.apply_masks(cnn, masks)
    assert torch.equal(pruned.fc1.weight == 0, ~masks["fc1.weight"] | (cnn.fc1.weight == 0))
    assert torch.equal(pruned.fc2.weight, cnn.fc2.weight)
    assert int((cnn.fc1.weight == 0).sum()) == 0  # the original is untouched
    with pytest.raises(ValueError, match="shape"):
        qc.apply_masks(cnn, {"fc1.weight": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(TypeError, match="bool"):
        qc.apply_masks(cnn, {"fc1.weight": torch.ones_like(cnn.fc1.weight)})


# ---------------------------------------------------------------- relative indices and bytes


def test_relative_index_by_hand():
    mask = torch.zeros(24, dtype=torch.bool)
    mask[[1, 10, 11, 23]] = True
    positions, skips = qc.relative_index_encode(mask, index_bits=2)
    # runs of 8 and 11 zeros need two fillers each with skips of at most 3
    assert positions.tolist() == [1, 5, 9, 10, 11, 15, 19, 23]
    assert skips.tolist() == [1, 3, 3, 0, 0, 3, 3, 3]
    assert qc.relative_index_decode(skips, 24).tolist() == positions.tolist()
    # values 4 bits + indices 2 bits, 8 entries: 4 + 2 bytes
    assert qc.sparse_nbytes(mask, qc.symmetric_qparams(torch.ones(1), 4), fmt="relative",
                            index_bits=2) == 4 + 2 + 4
    e, i = qc.relative_index_encode(torch.zeros(5, dtype=torch.bool))
    assert e.numel() == 0 and i.numel() == 0
    with pytest.raises(ValueError, match="past"):
        qc.relative_index_decode(torch.tensor([3, 3]), 5)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 400), st.floats(0.0, 1.0), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_relative_index_round_trip(numel, density, index_bits, seed):
    mask = torch.rand(numel, generator=torch.Generator().manual_seed(seed)) < density
    positions, skips = qc.relative_index_encode(mask, index_bits)
    assert (int(skips.max()) if skips.numel() else 0) <= 2**index_bits - 1
    assert torch.equal(qc.relative_index_decode(skips, numel), positions)
    kept = set(mask.nonzero().reshape(-1).tolist())
    assert kept <= set(positions.tolist())
    # the count without building the stream: 8-bit values plus index_bits per entry
    n = len(positions)
    qp = qc.symmetric_qparams(torch.ones(1), 8)
    assert qc.sparse_nbytes(mask, qp, fmt="relative", index_bits=index_bits) == \
        n + math.ceil(n * index_bits / 8) + 4


def test_sparse_nbytes_formats_by_hand():
    w = torch.randn(8, 64, generator=torch.Generator().manual_seed(1))
    mask = qc.nm_mask(w, 2, 4)
    qp = qc.symmetric_qparams(w * mask, 4, axis=0)
    kept = 8 * 32
    # float32 values + one bit per position
    assert qc.sparse_nbytes(mask) == 4 * kept + 8 * 64 // 8
    # 4-bit codes + 8 scales + 2-bit positions for 2:4
    assert qc.sparse_nbytes(mask, qp, fmt="nm", m=4) == kept // 2 + 4 * 8 + kept * 2 // 8
    assert qc.sparse_nbytes(mask, qp, fmt="bitmask") == kept // 2 + 4 * 8 + 64
    with pytest.raises(ValueError, match="not an N:M mask"):
        qc.sparse_nbytes(qc.magnitude_mask(w, 0.5), qp, fmt="nm")
    with pytest.raises(ValueError, match="fmt"):
        qc.sparse_nbytes(mask, fmt="csr")
    with pytest.raises(TypeError, match="bool"):
        qc.sparse_nbytes(mask.float())


def test_sparse_model_nbytes_matches_parts():
    cnn = qc.digits_cnn()
    masks = qc.prune_masks(cnn, 0.9, layers=("fc1",))
    w = cnn.fc1.weight.detach()
    qp = qc.symmetric_qparams(w * masks["fc1.weight"], 4, axis=0)
    dense = qc.quantized_model_nbytes(cnn, 4)
    dense_fc1 = qc.quantized_nbytes(w.numel(), qc.symmetric_qparams(w, 4, axis=0))
    want = dense - dense_fc1 + qc.sparse_nbytes(masks["fc1.weight"], qp, fmt="relative")
    assert qc.sparse_model_nbytes(cnn, masks, bits=4, fmt="relative") == want
    assert qc.sparse_model_nbytes(cnn) == qc.model_nbytes(cnn)
    with pytest.raises(ValueError, match="lacks"):
        qc.sparse_model_nbytes(cnn, {"fc9.weight": masks["fc1.weight"]})


# ---------------------------------------------------------------- distillation


def test_distillation_loss_by_hand():
    s = torch.tensor([[2.0, 0.5, -1.0]], dtype=torch.float64)
    t = torch.tensor([[3.0, 1.0, -2.0]], dtype=torch.float64)
    y = torch.tensor([0])
    temp, alpha = 2.0, 0.7
    # written out with math, element by element
    def softmax(z):
        e = [math.exp(v / temp) for v in z]
        return [v / sum(e) for v in e]
    p, q = softmax(t[0].tolist()), softmax(s[0].tolist())
    soft = temp**2 * sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    e = [math.exp(v) for v in s[0].tolist()]
    hard = -math.log(e[0] / sum(e))
    got = float(qc.distillation_loss(s, t, y, temperature=temp, alpha=alpha))
    assert got == pytest.approx(alpha * soft + (1 - alpha) * hard, rel=1e-12)


def test_distillation_loss_against_torch():
    gen = torch.Generator().manual_seed(3)
    s = torch.randn(16, 10, generator=gen, dtype=torch.float64)
    t = torch.randn(16, 10, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 10, (16,), generator=gen)
    kl = torch.nn.KLDivLoss(reduction="batchmean")(F.log_softmax(s / 4, 1), F.softmax(t / 4, 1))
    ce = torch.nn.CrossEntropyLoss()(s, y)
    got = qc.distillation_loss(s, t, y, temperature=4.0, alpha=0.25)
    assert float(got) == pytest.approx(float(0.25 * 16 * kl + 0.75 * ce), rel=1e-12)
    assert float(qc.distillation_loss(s, t, y, temperature=4.0, alpha=0.0)) == pytest.approx(float(ce))
    assert float(qc.distillation_loss(t, t, y, temperature=3.0, alpha=1.0)) == pytest.approx(0.0, abs=1e-12)


def test_distillation_gradient_reaches_only_the_student():
    s = torch.randn(4, 5, requires_grad=True)
    t = torch.randn(4, 5, requires_grad=True)
    qc.distillation_loss(s, t, torch.tensor([0, 1, 2, 3]), temperature=2.0, alpha=0.5).backward()
    assert s.grad is not None and t.grad is None


def test_distillation_loss_bad_input():
    s = torch.randn(4, 5)
    y = torch.tensor([0, 1, 2, 3])
    with pytest.raises(ValueError, match="temperature"):
        qc.distillation_loss(s, s, y, temperature=0, alpha=0.5)
    with pytest.raises(ValueError, match="alpha"):
        qc.distillation_loss(s, s, y, temperature=1, alpha=1.5)
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        qc.distillation_loss(s, torch.randn(4, 6), y, temperature=1, alpha=0.5)
    with pytest.raises(TypeError, match="targets"):
        qc.distillation_loss(s, s, y.float(), temperature=1, alpha=0.5)
    with pytest.raises(ValueError, match="targets for"):
        qc.distillation_loss(s, s, y[:3], temperature=1, alpha=0.5)
