"""quantcourse.metrics against direct computations and torch's own functions."""

from __future__ import annotations

import math

import pytest
import torch

import quantcourse as qc


def test_mse_max_error_and_sqnr_by_hand():
    x = torch.tensor([1.0, -2.0, 3.0, 0.0])
    y = torch.tensor([1.5, -2.0, 2.0, 0.0])
    assert qc.mse(x, y) == pytest.approx((0.25 + 1.0) / 4)
    assert qc.max_abs_error(x, y) == 1.0
    assert qc.sqnr_db(x, y) == pytest.approx(10 * math.log10(14 / 1.25))
    assert qc.sqnr_db(x, x) == math.inf


def test_cosine_similarity_matches_torch():
    torch.manual_seed(0)
    a, b = torch.randn(5, 8), torch.randn(5, 8)
    want = torch.nn.functional.cosine_similarity(a.reshape(1, -1), b.reshape(1, -1))
    assert qc.cosine_similarity(a, b) == pytest.approx(float(want), rel=1e-6)
    rows = qc.cosine_similarity(a, b, dim=1)
    assert torch.allclose(rows, torch.nn.functional.cosine_similarity(a, b, dim=1), atol=1e-6)


def test_sqnr_tracks_six_db_per_bit_on_uniform_data():
    x = torch.rand(200_000, generator=torch.Generator().manual_seed(0)) * 2 - 1
    s = [qc.sqnr_db(x, qc.fake_quantize(x, qc.symmetric_qparams(x, b))) for b in (6, 7, 8)]
    assert s[1] - s[0] == pytest.approx(6.02, abs=0.3)
    assert s[2] - s[1] == pytest.approx(6.02, abs=0.3)


def test_sizes():
    model = torch.nn.Linear(10, 4)
    assert qc.model_nbytes(model) == (40 + 4) * 4
    assert qc.tensor_nbytes(torch.zeros(3, dtype=torch.float16)) == 6
    w = torch.randn(64, 32)
    sym = qc.symmetric_qparams(w, 4, axis=0)
    assert qc.quantized_nbytes(w.numel(), sym) == 64 * 32 // 2 + 64 * 4
    asym = qc.asymmetric_qparams(w, 8)
    assert qc.quantized_nbytes(w.numel(), asym) == 64 * 32 + 4 + 1
    assert qc.quantized_nbytes(7, qc.symmetric_qparams(w, 3)) == 3 + 4  # 21 bits -> 3 bytes
    with pytest.raises(ValueError, match="cannot hold"):
        qc.quantized_nbytes(10, asym, bits=4)


def test_metric_inputs_are_checked():
    with pytest.raises(ValueError, match="shapes differ"):
        qc.mse(torch.zeros(3), torch.zeros(4))
    with pytest.raises(TypeError, match="floating-point"):
        qc.mse(torch.zeros(3, dtype=torch.int32), torch.zeros(3))


def test_quantized_model_nbytes_counts_packed_bits_scales_and_float_leftovers():
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.Flatten(), torch.nn.Linear(16, 8))
    # conv weight 4x2x3x3 = 72 values, linear 8x16 = 128 values; biases 4 + 8 floats
    per_channel_4bit = (72 * 4 + 7) // 8 + 4 * 4 + (128 * 4) // 8 + 8 * 4 + (4 + 8) * 4
    assert qc.quantized_model_nbytes(model, 4) == per_channel_4bit
    per_tensor_8bit = 72 + 4 + 128 + 4 + (4 + 8) * 4
    assert qc.quantized_model_nbytes(model, 8, axis=None) == per_tensor_8bit
    # groups of 2 along each row's 18 (conv) and 16 (linear) inputs
    grouped = 72 // 2 + 36 * 4 + 128 // 2 + 64 * 4 + (4 + 8) * 4
    assert qc.quantized_model_nbytes(model, 4, group_size=2) == grouped
    asym = qc.quantized_model_nbytes(model, 8, symmetric=False)
    assert asym >= per_tensor_8bit  # zero points cost bytes
    with pytest.raises(ValueError, match="does not divide the 18 inputs"):
        qc.quantized_model_nbytes(model, 4, group_size=4)
