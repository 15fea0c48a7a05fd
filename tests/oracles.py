"""Oracles for the tests: PyTorch's own quantization ops (skipped where this PyTorch has dropped
them), an integer-only matmul and the fake-quantized simulation of a W8A8 layer."""

from __future__ import annotations

import warnings

import pytest
import torch

import quantcourse as qc


def torch_ao(name: str):
    """``torch.ao.quantization.<name>``, or skip the test where it no longer exists."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torch.ao.quantization as tq

            return getattr(tq, name)
    except (ImportError, AttributeError):
        pytest.skip("torch.ao.quantization is not available in this PyTorch")


def oracle_int64(a, b):
    """Independent oracle: int64 matmul on the CPU (no floats anywhere)."""
    return a.cpu().long() @ b.cpu().long()


def w8a8_simulation(lin, x, act_bits=8):
    """Fake-quantized float64 simulation: per-token inputs on the signed ``act_bits`` grid
    (8, or 7 as W8A8Linear uses where fbgemm runs without VNNI), per-channel int8 weights.

    Returns the simulated output and a rounding bound: the layer and the simulation each
    round every term of the sum to float32 a few times (relative error ~2^-24 per step).
    """
    w = lin.weight.detach()
    x2 = x.reshape(-1, x.shape[-1])
    xf = qc.fake_quantize(x2, qc.symmetric_qparams(x2, act_bits, axis=0)).double()
    wf = qc.fake_quantize(w, qc.symmetric_qparams(w, 8, axis=0)).double()
    b = torch.zeros(w.shape[0], dtype=torch.float64) if lin.bias is None else lin.bias.double()
    sim = xf @ wf.T + b
    bound = 1e-6 * (xf.abs() @ wf.abs().T + b.abs()) + 1e-12
    shape = (*x.shape[:-1], w.shape[0])
    return sim.reshape(shape), bound.reshape(shape)
