"""Checkers for the exercises of ``00_welcome.ipynb``."""

from __future__ import annotations

import math

import torch

from ..affine import QParams, dequantize, qrange, quantize, symmetric_qparams
from ..metrics import quantized_nbytes
from ..models import digits_cnn
from ._core import (
    CheckFailed,
    as_tensor,
    call,
    checker,
    fmt_pair,
    hint_for,
    narrow_qmax,
    passed,
    without_package,
)

# (numel, bits, n_scales): a transformer-sized layer per tensor and per row, odd sizes whose
# packed bits do not fill the last byte, and a tiny tensor where the scale bytes dominate.
_RATIO_CASES = [
    (4096 * 4096, 8, 1),
    (4096 * 4096, 4, 4096),
    (1000, 2, 10),
    (7, 3, 1),
    (10, 4, 1),
    (1, 8, 1),
]


def _reference_ratio(numel: int, bits: int, n_scales: int) -> float:
    """FP32 bytes over ``qc.quantized_nbytes`` for a symmetric grid of ``bits`` bits."""
    qmin, qmax = qrange(bits, signed=False)  # an unsigned grid holds exactly `bits` bits
    axis = 0 if n_scales > 1 else None
    shape = (n_scales,) if n_scales > 1 else ()
    qp = QParams(torch.ones(shape), torch.zeros(shape, dtype=torch.int32), qmin, qmax, axis)
    return 4 * numel / quantized_nbytes(numel, qp, bits=bits)


def _ratio_hint(got: float, numel: int, bits: int, n_scales: int) -> str:
    """Name the usual mistake whose result matches ``got``."""
    fp32 = 4 * numel
    payload_bits = numel * bits
    mistakes = {
        "you left out the scales: each of the n_scales scales costs 4 bytes (a float32)":
            fp32 / math.ceil(payload_bits / 8),
        "round the packed payload up to whole bytes: math.ceil(numel * bits / 8)":
            fp32 / (payload_bits / 8 + 4 * n_scales),
        "round the packed payload UP to whole bytes (math.ceil), not down":
            fp32 / (payload_bits // 8 + 4 * n_scales),
        "the payload is numel * bits BITS: divide by 8 to get bytes":
            fp32 / (payload_bits + 4 * n_scales),
        "you counted the quantized size in bits: divide by 8 to get bytes":
            fp32 / (payload_bits + 32 * n_scales),
        "FP32 takes 4 bytes (32 bits) per value: you counted the FP32 size in bits":
            32 * numel / (math.ceil(payload_bits / 8) + 4 * n_scales),
        "every scale costs 4 bytes: multiply by n_scales":
            fp32 / (math.ceil(payload_bits / 8) + 4),
        "a float32 scale is 4 bytes, not 1": fp32 / (math.ceil(payload_bits / 8) + n_scales),
        "the ratio is FP32 bytes / quantized bytes, not the other way round":
            (math.ceil(payload_bits / 8) + 4 * n_scales) / fp32,
    }
    return hint_for(got, mistakes, rtol=1e-9, default="quantized bytes = math.ceil(numel * "
                    "bits / 8) + 4 * n_scales; FP32 bytes = 4 * numel")


def _as_number(value, what: str) -> float:
    """A Python number, a NumPy scalar or a one-element tensor, as a float (no float32 detour)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_complex():
            raise CheckFailed(f"{what}: expected one real number, got a tensor of shape "
                              f"{tuple(value.shape)}")
        return float(value.item())
    if isinstance(value, bool) or not hasattr(value, "__float__") or isinstance(value, complex):
        raise CheckFailed(f"{what}: expected a number, got {type(value).__name__}")
    return float(value)


@checker
def check_compression_ratio(answer) -> None:
    """``answer(numel, bits, n_scales)`` returns FP32 bytes / quantized bytes (scales included)."""
    for numel, bits, n_scales in _RATIO_CASES:
        what = f"compression_ratio(numel={numel}, bits={bits}, n_scales={n_scales})"
        got = call(answer, numel, bits, n_scales, what=what)
        g = _as_number(got, what)
        want = _reference_ratio(numel, bits, n_scales)
        if not math.isclose(g, want, rel_tol=1e-9):
            raise CheckFailed(
                f"{what}: expected {want:.10g}, got {g:.10g}. "
                f"Hint: {_ratio_hint(g, numel, bits, n_scales)}"
            )
    passed(
        f"compression ratios match qc.quantized_nbytes on {len(_RATIO_CASES)} cases "
        f"(e.g. 4096x4096 at INT8 per tensor: {_reference_ratio(4096 * 4096, 8, 1):.7g}x)"
    )


# --------------------------------------------------------------- check_largest_fit

GB = 1e9
# (parameters, layers, key/value width per token per layer): published shapes. Llama 2 70B and
# Mistral 7B use grouped-query attention, so their keys and values are narrower than the hidden
# size (8 key/value heads of 128).
_MODELS = {
    "TinyLlama 1.1B": (1.10e9, 22, 256),
    "Phi-2 2.7B": (2.78e9, 32, 2560),
    "Llama 2 7B": (6.74e9, 32, 4096),
    "Mistral 7B": (7.24e9, 32, 1024),
    "Llama 2 13B": (13.0e9, 40, 5120),
    "Llama 2 70B": (69.0e9, 80, 1024),
}
_FORMATS = {"FP16": 2.0, "INT8": 1.001, "INT4": 0.501}  # bytes per parameter, scales included
# (label, memory, reserved, context tokens)
_FIT_CASES = [
    ("an 8 GB phone, 3 GB reserved, 2,048 tokens", 8 * GB, 3 * GB, 2048),
    ("a 16 GB laptop, 4 GB reserved, 4,096 tokens", 16 * GB, 4 * GB, 4096),
    ("a 24 GB GPU, 1 GB reserved, 32,768 tokens", 24 * GB, 1 * GB, 32768),
    ("an 80 GB GPU, 2 GB reserved, 4,096 tokens", 80 * GB, 2 * GB, 4096),
    ("a 2 GB board, 0.8 GB reserved, 2,048 tokens", 2 * GB, 0.8 * GB, 2048),
    ("a 1 GB board, 0.8 GB reserved, 2,048 tokens", 1 * GB, 0.8 * GB, 2048),
]


def _best_fit(models, formats, memory, reserved, context, *, kv_factor=2, kv_bytes=2,
              use_kv=True, use_reserved=True, prefer="precision"):
    """The reference decision, and (through the keywords) the usual mistakes."""
    budget = memory - (reserved if use_reserved else 0)
    fits = []
    for name, (params, layers, kv_dim) in models.items():
        kv = kv_factor * layers * kv_dim * kv_bytes * context if use_kv else 0
        for fmt, bpp in formats.items():
            if params * bpp + kv <= budget:
                fits.append((params, bpp if prefer == "precision" else -bpp, name, fmt))
    if not fits:
        return None
    best = max(fits, key=lambda f: (f[0], f[1]))
    return (best[2], best[3])


def _fit_hint(got, case) -> str:
    args = (_MODELS, _FORMATS, *case[1:])
    want = _best_fit(*args)
    mistakes = {
        "count the KV cache: 2 (keys and values) x layers x kv_dim x 2 bytes x context tokens":
            dict(use_kv=False),
        "the KV cache holds keys AND values: a factor 2 besides the 2 bytes of FP16":
            dict(kv_factor=1),
        "an FP16 key or value takes 2 bytes, not 1": dict(kv_bytes=1),
        "subtract the reserved memory (system, apps, runtime) from the device's memory":
            dict(use_reserved=False),
        "among the formats of the largest model that fits, keep the most precise one "
        "(the most bytes per parameter)": dict(prefer="compression"),
    }
    for hint, kw in mistakes.items():
        wrong = _best_fit(*args, **kw)
        if wrong == got and wrong != want:
            return hint
    return ("weights = parameters x bytes per parameter; KV cache = 2 x layers x kv_dim x 2 "
            "bytes x context; both must fit in memory - reserved")


@checker
def check_largest_fit(answer) -> None:
    """``answer(models, formats, memory, reserved, context)`` -> (model, format) or None."""
    for case in _FIT_CASES:
        label = case[0]
        what = f"largest_fit on {label}"
        got = call(answer, dict(_MODELS), dict(_FORMATS), *case[1:], what=what)
        want = _best_fit(_MODELS, _FORMATS, *case[1:])
        if isinstance(got, list):
            got = tuple(got)
        if got != want:
            raise CheckFailed(f"{what}: expected {want}, got {got!r}. Hint: {_fit_hint(got, case)}")
    phone = _best_fit(_MODELS, _FORMATS, *_FIT_CASES[0][1:])
    gpu = _best_fit(_MODELS, _FORMATS, *_FIT_CASES[2][1:])
    passed(f"your choices match on {len(_FIT_CASES)} devices: the phone takes {phone[0]} at "
           f"{phone[1]}; at 32,768 tokens the 24 GB GPU takes {gpu[0]} at {gpu[1]}, whose "
           "narrow keys and values (grouped-query attention) keep its KV cache small")


# --------------------------------------------------------------- check_output_error_bound


def _bound(W: torch.Tensor, X: torch.Tensor, bits: int, *, step=0.5, qmax=None, absolute=True,
           per_row=True, norm="l1") -> torch.Tensor:
    """Reference worst-case bound on |X W^T - X W_hat^T| (and, by keyword, the mistakes)."""
    W, X = W.double(), X.double()
    qmax = narrow_qmax(bits) if qmax is None else qmax
    amax = W.abs().amax(dim=1) if per_row else W.abs().max().expand(W.shape[0])
    s = torch.clamp(amax / qmax, min=torch.finfo(torch.float32).eps)
    if norm == "l2":
        size = X.norm(dim=1, keepdim=True)
    else:
        size = (X.abs() if absolute else X).sum(dim=1, keepdim=True)
    return step * size * s.unsqueeze(0)


def _fc1_inputs(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """The digits CNN's fc1 weight (64, 512) and ``n`` non-negative inputs shaped like a
    ReLU's output (half of them zero)."""
    g = torch.Generator().manual_seed(3)
    return digits_cnn().fc1.weight.detach().clone(), torch.relu(torch.randn(n, 512, generator=g))


def _bound_cases() -> list[tuple[str, torch.Tensor, torch.Tensor, int]]:
    g = torch.Generator().manual_seed(7)
    W = torch.randn(6, 40, generator=g) * torch.tensor([0.02, 0.05, 0.1, 0.01, 0.3, 0.02])[:, None]
    X = torch.randn(5, 40, generator=g)  # negative inputs too: |x|, not x
    W0 = W.clone()
    W0[2] = 0.0  # an all-zero row: nothing to round
    w_fc1, h = _fc1_inputs(8)
    return [
        ("a 6x40 weight with rows of different sizes, 8 bits", W, X, 8),
        ("the same at 4 bits", W, X, 4),
        ("a weight with an all-zero row, 8 bits", W0, X, 8),
        ("one token, 3 bits", W, X[:1], 3),
        ("the digits CNN's fc1 weight, ReLU-like inputs, 8 bits", w_fc1, h, 8),
    ]


def _bound_hint(got: torch.Tensor, W, X, bits) -> str:
    qmax = narrow_qmax(bits)
    return hint_for(got, {
        "a weight moves by at most HALF a step, s_{W,j} / 2": _bound(W, X, bits, step=1.0),
        "each output channel j has its own scale s_{W,j} = max_k |W_jk| / q_max: take the "
        "maximum along each row of W": _bound(W, X, bits, per_row=False),
        "q_max = 2^(b-1) - 1 (127 at 8 bits)": _bound(W, X, bits, qmax=qmax + 1),
        "in the worst case every error pushes the same way: add |X_ik|, not X_ik":
            _bound(W, X, bits, absolute=False),
        "a worst case adds |X_ik| s_{W,j} / 2 over k; the norm ||X_i|| is the typical size "
        "of the error, not its bound": _bound(W, X, bits, norm="l2"),
    }, rtol=1e-5, atol=1e-12, default="|Y_ij - Y_hat_ij| <= sum_k |X_ik| |W_jk - W_hat_jk| "
       "and |W_jk - W_hat_jk| <= s_{W,j} / 2")


@checker
def check_output_error_bound(answer) -> None:
    """``answer(W, X, bits)`` -> (tokens, out) worst-case bound on |X W^T - X W_hat^T|."""
    for label, W, X, bits in _bound_cases():
        what = f"output_error_bound on {label}"
        with without_package(what):
            got = call(answer, W.clone(), X.clone(), bits, what=what)
        got = as_tensor(got, what)
        want = _bound(W, X, bits)
        if tuple(got.shape) != tuple(want.shape):
            raise CheckFailed(f"{what}: expected shape {tuple(want.shape)} (tokens, out "
                              f"features), got {tuple(got.shape)}")
        g = got.detach().double()
        if not torch.allclose(g, want, rtol=1e-5, atol=1e-12):
            idx = tuple((~torch.isclose(g, want, rtol=1e-5, atol=1e-12)).nonzero()[0].tolist())
            a, b = fmt_pair(float(g[idx]), float(want[idx]))
            raise CheckFailed(f"{what}: at (token, out) = {idx} expected {b}, got {a}. "
                              f"Hint: {_bound_hint(g, W, X, bits)}")
    # measure: the real error of the INT8 layer against the bound (the reference's, which
    # the learner's now equals)
    W, X = _fc1_inputs(32)
    qp = symmetric_qparams(W, bits=8, axis=0)
    err = (X.double() @ (W.double() - dequantize(quantize(W, qp), qp).double()).T).abs()
    ratio = float((err / _bound(W, X, 8)).max())
    passed(f"your bound matches on {len(_bound_cases())} cases. Measured on the digits CNN's "
           f"fc1 weight (8 bits, 32 ReLU-like inputs): the largest error reaches "
           f"{100 * ratio:.0f}% of the bound; rounding errors of both signs mostly cancel")
