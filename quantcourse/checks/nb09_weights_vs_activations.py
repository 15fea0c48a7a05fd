"""Checkers for the exercises of ``09_weights_vs_activations.ipynb``."""

from __future__ import annotations

import math
import numbers

import torch

from ..affine import asymmetric_qparams, fake_quantize, quantize, symmetric_qparams
from ._core import CheckFailed, as_tensor, call, checker, expect_close, hint_for, passed

_EPS = torch.finfo(torch.float32).eps

# ---------------------------------------------------------------- per-token scales


def _token_cases() -> list[tuple[str, torch.Tensor, int]]:
    g = torch.Generator().manual_seed(9)
    outlier = torch.randn(12, 40, generator=g)
    outlier[0, 7] = 30.0                       # a [CLS]-like token with a massive activation
    negative = torch.randn(10, 24, generator=g)
    negative[3, 2] = -9.0                      # a row whose largest magnitude is negative
    padded = torch.randn(6, 16, generator=g)
    padded[4] = 0.0                            # an all-zero (padding) row
    return [
        ("Gaussian activations (32 tokens x 64 channels), 8 bits",
         torch.randn(32, 64, generator=g), 8),
        ("activations with an outlier token (12 x 40), 8 bits", outlier, 8),
        ("a row whose largest magnitude is negative (10 x 24), 8 bits", negative, 8),
        ("ReLU activations (20 x 50), 4 bits", torch.relu(torch.randn(20, 50, generator=g)), 4),
        ("activations with an all-zero padding row (6 x 16), 8 bits", padded, 8),
    ]


def _token_hint(got: torch.Tensor, x: torch.Tensor, bits: int, want: torch.Tensor) -> str:
    qmax = 2 ** (bits - 1) - 1
    g = got.detach().double()
    amax = x.abs().amax(dim=1).double()
    if bool(torch.isnan(g).any()) or bool(((want == _EPS) & (g == 0)).any()):
        return ("an all-zero row has max |x| = 0 and would get a scale of 0: floor the scale at "
                "torch.finfo(torch.float32).eps")
    hint = hint_for(g, {
        "divide by 2^(b-1) - 1 (the narrow symmetric grid's qmax), not 2^(b-1)":
            torch.clamp(amax / 2 ** (bits - 1), min=_EPS),
        "use the largest magnitude |x| of each row (x.abs()), not the largest value":
            torch.clamp(x.amax(dim=1).double() / qmax, min=_EPS),
    }, rtol=1e-5)
    if hint:
        return hint
    if bool((g == g[0]).all()):
        return ("every row got the same scale: that is per tensor; take the max of |x| over "
                "each row separately (dim=1)")
    return "s_i = max_k |x_ik| / (2^(b-1) - 1) for each row i, floored at float32 eps"


@checker
def check_per_token_qparams(answer) -> None:
    """``answer(x, bits)`` returns one symmetric scale per row of a (tokens, hidden) tensor."""
    cases = _token_cases()
    for name, x, bits in cases:
        what = f"per_token_scales on {name}"
        got = as_tensor(call(answer, x.clone(), bits, what=what), what)
        want = symmetric_qparams(x, bits, axis=0).scale
        if got.shape == (x.shape[0], 1):
            got = got.reshape(-1)                  # keepdim=True is fine
        if got.shape != want.shape:
            if got.numel() == x.shape[1]:
                hint = ("you returned one scale per column (channel); per token means one "
                        "scale per row: reduce over dim=1")
            elif got.numel() == 1:
                hint = "you returned a single (per-tensor) scale; return one scale per row"
            else:
                hint = "return a 1-D tensor with one scale per row (token)"
            raise CheckFailed(f"{what}: expected shape {tuple(want.shape)}, got "
                              f"{tuple(got.shape)}. Hint: {hint}")
        if not bool(torch.isfinite(got.double()).all()) or not torch.allclose(
                got.double(), want.double(), rtol=1e-5, atol=0):
            hint = _token_hint(got, x, bits, want)
        else:
            hint = ""
        expect_close(got, want, f"{what}: scales", rtol=1e-5, atol=0.0, hint=hint)
    passed(f"per-token scales match qc.symmetric_qparams(x, bits, axis=0).scale on {len(cases)} "
           "activations (outlier token, negative maximum and all-zero row included)")


# ---------------------------------------------------------------- activation fake quantization


def _act_cases() -> list[tuple[str, torch.Tensor, int]]:
    g = torch.Generator().manual_seed(19)
    hidden = torch.randn(2, 7, 16, generator=g)
    hidden[:, 0, 5] = 25.0                     # an outlier channel on the first token
    return [
        ("ReLU outputs (64 x 32), 8 bits", torch.relu(torch.randn(64, 32, generator=g)), 8),
        ("ReLU outputs (64 x 32), 4 bits", torch.relu(torch.randn(64, 32, generator=g)), 4),
        ("GELU outputs (40 x 50), 4 bits",
         torch.nn.functional.gelu(3 * torch.randn(40, 50, generator=g)), 4),
        ("a (batch, seq, hidden) = (2, 7, 16) tensor with an outlier, 8 bits", hidden, 8),
        ("values exactly half-way between codes (s = 1, z = 1), 2 bits",
         torch.tensor([-1.0, -0.5, 0.5, 1.5, 2.0]), 2),
        ("an all-positive tensor in [2, 5], 4 bits", 2 + 3 * torch.rand(30, generator=g), 4),
        ("an all-zero tensor, 8 bits", torch.zeros(3, 4), 8),
    ]


def _act_hint(got: torch.Tensor, x: torch.Tensor, bits: int) -> str:
    g = got.detach().double()
    if not bool(torch.isfinite(g).all()):
        if float(x.abs().max()) == 0.0:
            return ("an all-zero tensor gives max - min = 0: floor the scale at "
                    "torch.finfo(torch.float32).eps")
        return "NaN or infinite values: did the scale come out as 0?"

    symmetric = ("this is a symmetric grid (zero point 0, centred on 0); activations such as "
                 "ReLU outputs are skewed, so use an asymmetric grid [0, 2^b - 1] with a zero "
                 "point")
    qp = asymmetric_qparams(x, bits)
    s, z, qmax = qp.scale.double(), qp.zero_point.double(), qp.qmax

    def per_row() -> torch.Tensor | None:
        if x.ndim < 2:
            return None
        flat = x.reshape(-1, x.shape[-1])
        return fake_quantize(flat, asymmetric_qparams(flat, bits, axis=0)).reshape(x.shape)

    hint = hint_for(g, [
        (symmetric, lambda: fake_quantize(x, symmetric_qparams(x, bits, narrow_range=True))),
        (symmetric, lambda: fake_quantize(x, symmetric_qparams(x, bits, narrow_range=False))),
        ("return the dequantized values s * (q - z), not the integer codes q",
         lambda: quantize(x, qp)),
        ("add the zero point AFTER rounding: round(x * (1/s)) + z; round(x/s + z) lands "
         "on another code at exact halves when z is odd",
         lambda: s * (torch.clamp(torch.round(x.double() / s + z), 0, qmax) - z)),
        ("use one scale and zero point for the whole tensor (per tensor), not per row", per_row),
    ], rtol=1e-5, atol=1e-6)
    if hint:
        return hint
    lo, hi = float(x.min()), float(x.max())
    if lo > 0 or hi < 0:
        return ("widen the range to include 0 first: lo = min(x.min(), 0), hi = max(x.max(), 0); "
                "otherwise the zero point is clamped and values are clipped")
    return ("s = (hi - lo) / (2^b - 1) with lo = min(x.min(), 0), hi = max(x.max(), 0); "
            "z = clamp(-round(lo / s), 0, 2^b - 1); x_hat = s * (clamp(round(x * (1/s)) + z, "
            "0, 2^b - 1) - z), rounding half to even (torch.round)")


@checker
def check_activation_fake_quant(answer) -> None:
    """``answer(x, bits)`` returns x fake-quantized on a dynamic asymmetric per-tensor grid."""
    cases = _act_cases()
    for name, x, bits in cases:
        what = f"act_fake_quant on {name}"
        got = as_tensor(call(answer, x.clone(), bits, what=what), what)
        want = fake_quantize(x, asymmetric_qparams(x, bits))
        if got.shape != want.shape:
            raise CheckFailed(f"{what}: expected shape {tuple(want.shape)} (the input's shape), "
                              f"got {tuple(got.shape)}")
        ok = bool(torch.isfinite(got.double()).all()) and torch.allclose(
            got.double(), want.double(), rtol=1e-5, atol=1e-6)
        expect_close(got, want, f"{what}: fake-quantized values", rtol=1e-5, atol=1e-6,
                     hint="" if ok else _act_hint(got, x, bits))
    passed(f"dynamic asymmetric fake quantization matches qc.fake_quantize on {len(cases)} "
           "activations (ReLU, GELU, 3-D, exact halves, all-positive and all-zero)")


# ---------------------------------------------------------------- weight and activation bytes

_BYTE_CASES = [
    # (n_weights, values_per_token, batch, seq_len, w_bits, a_bits)
    (10_616_832, 16_128, 1, 16, 32, 32),       # MiniLM, one short sentence, float32
    (10_616_832, 16_128, 8, 128, 4, 16),       # W4A16
    (10_616_832, 16_128, 32, 128, 8, 8),       # W8A8
    (1_001, 7, 3, 5, 4, 8),                    # an odd count at 4 bits: round up
    (99, 3, 1, 1, 3, 4),                       # bits that do not fill whole bytes
    (5_000, 20, 2, 3, 2, 16),
]


def _int_answer(value, what: str) -> int | float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise CheckFailed(f"{what}: expected a number of bytes, got {type(value).__name__}")
    return value


def _bytes_hint(got: float, case: tuple, which: str) -> str:
    n, vpt, batch, seq, wb, ab = case
    tokens = batch * seq
    if which == "weight":
        cands = {
            "weights are read once per forward pass, whatever the batch: do not multiply them "
            "by batch x seq_len": n * wb / 8 * tokens,
            "bytes = values x bits / 8: you returned bits": n * wb,
            "round up to whole bytes (math.ceil): packed storage cannot hold half a byte":
                math.floor(n * wb / 8),
            "round up to whole bytes (math.ceil) and return an integer": n * wb / 8,
            "weights use w_bits, activations a_bits: they are swapped": math.ceil(n * ab / 8),
        }
    else:
        cands = {
            "every token of the batch x seq_len brings its own activations: multiply by both":
                math.ceil(seq * vpt * ab / 8),
            "every token of the batch x seq_len brings its own activations: multiply by "
            "both (you left out the sequence length)": math.ceil(batch * vpt * ab / 8),
            "bytes = values x bits / 8: you returned bits": tokens * vpt * ab,
            "round up to whole bytes (math.ceil): packed storage cannot hold half a byte":
                math.floor(tokens * vpt * ab / 8),
            "round up to whole bytes (math.ceil) and return an integer": tokens * vpt * ab / 8,
            "weights use w_bits, activations a_bits: they are swapped":
                math.ceil(tokens * vpt * wb / 8),
        }
    return hint_for(got, cands, default="weight bytes = ceil(n_weights * w_bits / 8); activation "
                    "bytes = ceil(batch * seq_len * values_per_token * a_bits / 8)")


@checker
def check_weight_vs_activation_bytes(answer) -> None:
    """``answer(n_weights, values_per_token, batch, seq_len, w_bits, a_bits)`` -> (w, a) bytes."""
    for case in _BYTE_CASES:
        n, vpt, batch, seq, wb, ab = case
        what = (f"weight_and_activation_bytes(n_weights={n}, values_per_token={vpt}, "
                f"batch={batch}, seq_len={seq}, w_bits={wb}, a_bits={ab})")
        got = call(answer, *case, what=what)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise CheckFailed(f"{what}: expected a pair (weight_bytes, activation_bytes), got "
                              f"{type(got).__name__}")
        want = (math.ceil(n * wb / 8), math.ceil(batch * seq * vpt * ab / 8))
        for value, target, which in zip(got, want, ("weight", "activation"), strict=True):
            v = _int_answer(value, f"{what}: {which} bytes")
            if v != target:
                raise CheckFailed(f"{what}: {which} bytes: expected {target:,}, got {v:,}. "
                                  f"Hint: {_bytes_hint(v, case, which)}")
    passed(f"weight and activation bytes are right on {len(_BYTE_CASES)} forward passes "
           "(odd counts at 3 and 4 bits included)")
