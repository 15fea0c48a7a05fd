"""Checkers for the exercises of ``09_weights_vs_activations.ipynb``.

Two checkers run the learner's function on real MiniLM tensors as well: layer inputs captured
once per process (:func:`_minilm_tensors`, about a second once MiniLM is loaded) from
sentences that the notebook's own tables do not use, with the padding rows marked.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from ..affine import asymmetric_qparams, fake_quantize, symmetric_qparams
from ..data import corpus
from ..metrics import mse, sqnr_db
from ..models import minilm
from ..nn import capture_inputs
from ._core import (
    CheckFailed,
    as_tensor,
    call,
    checker,
    expect_close,
    fmt_pair,
    hint_for,
    one_number,
    passed,
)

_BLOCK = "0.model.encoder.layer."
_WORDS = "0.model.embeddings.word_embeddings"
_FFN1 = _BLOCK + "1.intermediate.dense"          # its input: block 1's layer-norm output
_ATTN_OUT = _BLOCK + "4.attention.output.dense"  # its input: block 4's attention context
_FLOOR = 1e-5


@lru_cache(maxsize=1)
def _minilm_tensors() -> dict[str, torch.Tensor]:
    """Real MiniLM tensors: two padded layer inputs, the real-token mask, FFN-1's weight."""
    model = minilm()
    sentences = corpus()[96:112]                 # 16 sentences the notebook's tables skip
    seen = capture_inputs(
        model, lambda: model.encode(sentences, batch_size=64, show_progress_bar=False),
        [_WORDS, _FFN1, _ATTN_OUT], types=(torch.nn.Linear, torch.nn.Embedding))
    real = seen.pop(_WORDS) != model.tokenizer.pad_token_id
    weight = dict(model.named_modules())[_FFN1].weight.detach().clone()
    return {"real": real, "ffn_in": seen[_FFN1], "attn_out_in": seen[_ATTN_OUT],
            "ffn1_weight": weight}


# ---------------------------------------------------------------- smoothing (SmoothQuant)


def _smooth_reference(x: torch.Tensor, w: torch.Tensor, alpha: float, *, swap: bool = False,
                      floor: bool = True, use_abs: bool = True):
    a = (x.abs() if use_abs else x).amax(dim=0)
    b = w.abs().amax(dim=0)
    if floor:
        a, b = a.clamp(min=_FLOOR), b.clamp(min=_FLOOR)
    m = a ** (1 - alpha) / b ** alpha if swap else a**alpha / b ** (1 - alpha)
    return x / m, w * m, m


def _smooth_cases() -> list[tuple[str, torch.Tensor, torch.Tensor, float]]:
    g = torch.Generator().manual_seed(90)
    x = torch.randn(24, 16, generator=g)
    x[0, 5] = 30.0                               # a [CLS]-like token, one outlier channel
    x[:, 9] *= 6.0                               # a channel that is large on every token
    w = 0.1 * torch.randn(12, 16, generator=g)
    zero = torch.randn(10, 8, generator=g)
    zero[:, 3] = 0.0                             # an input channel that is always zero
    return [
        ("an outlier channel (24 tokens x 16 in, 12 out), alpha 0.5", x, w, 0.5),
        ("the same tensors, alpha 0.8", x, w, 0.8),
        ("alpha 0 (the weights' ranges alone decide)", x, w, 0.0),
        ("alpha 1 (every column of X scaled to max |x| = 1)", x, w, 1.0),
        ("an input channel that is always zero (10 x 8, 5 out), alpha 0.5", zero,
         torch.randn(5, 8, generator=g), 0.5),
    ]


def _smooth_hint(got: tuple, x: torch.Tensor, w: torch.Tensor, alpha: float) -> str:
    gx, gw = (t.detach().double() for t in got)
    if not (bool(torch.isfinite(gx).all()) and bool(torch.isfinite(gw).all())):
        return ("NaN or infinite values: an input channel whose maximum is 0 gives m_k = 0; "
                "floor both maxima at 1e-5 before the powers")
    wx, ww, m = _smooth_reference(x, w, alpha)
    inverted = (x * m, w / m)
    hint = hint_for(got, [
        ("divide X by m and multiply W by m (you did the opposite): the activations must "
         "shrink where they are large, the weights absorb the factor", inverted),
        ("alpha goes on the activation maximum: m_k = max|X_k|^alpha / max|W_k|^(1-alpha)",
         lambda: _smooth_reference(x, w, alpha, swap=True)[:2]),
        ("use the largest magnitude |X_k| of each column (x.abs()), not its largest value",
         lambda: _smooth_reference(x, w, alpha, use_abs=False)[:2]),
    ], rtol=1e-4, atol=1e-6, want=(wx, ww))
    if hint:
        return hint
    if torch.allclose(gx, wx.double(), rtol=1e-4, atol=1e-6):
        return ("X is right but W is not: multiply column k of W (input channel k) by m_k, "
                "w * m broadcast over the last dimension, so that X W^T is unchanged")
    return ("m_k = max_i |X_ik|^alpha / max_j |W_jk|^(1-alpha) per input channel k (column k of "
            "both X and W), each maximum floored at 1e-5; return (X / m, W * m)")


def _w8a8_sqnr(x: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> float:
    """SQNR (dB) of a W8A8 product: X per tensor, W per output channel, both symmetric."""
    xh = fake_quantize(x, symmetric_qparams(x, 8))
    wh = fake_quantize(w, symmetric_qparams(w, 8, axis=0))
    return sqnr_db(y, xh.double() @ wh.double().T)


def _check_smooth_once(answer, what: str, x, w, alpha) -> tuple[torch.Tensor, torch.Tensor]:
    got = call(answer, x.clone(), w.clone(), alpha, what=what)
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise CheckFailed(f"{what}: expected a pair (X_smoothed, W_smoothed), got "
                          f"{type(got).__name__}")
    gx, gw = (as_tensor(t, what) for t in got)
    want_x, want_w, _ = _smooth_reference(x, w, alpha)
    for t, want, name in ((gx, want_x, "X_smoothed"), (gw, want_w, "W_smoothed")):
        if t.shape != want.shape:
            raise CheckFailed(f"{what}: {name} should keep the shape {tuple(want.shape)}, got "
                              f"{tuple(t.shape)}. Hint: m has one factor per input channel "
                              "(a column of X and the same column of W)")
    ok = all(bool(torch.isfinite(t.double()).all()) and torch.allclose(
        t.double(), want.double(), rtol=1e-4, atol=1e-6) for t, want in ((gx, want_x),
                                                                         (gw, want_w)))
    hint = "" if ok else _smooth_hint((gx, gw), x, w, alpha)
    expect_close(gx, want_x, f"{what}: X_smoothed", rtol=1e-4, atol=1e-6, hint=hint)
    expect_close(gw, want_w, f"{what}: W_smoothed", rtol=1e-4, atol=1e-6, hint=hint)
    return gx, gw


@checker
def check_smooth_outlier(answer) -> None:
    """``answer(x, w, alpha)`` returns ``(X / m, W * m)`` with SmoothQuant's per-channel m."""
    cases = _smooth_cases()
    for name, x, w, alpha in cases:
        _check_smooth_once(answer, f"smooth on {name}", x, w, alpha)
    real = _minilm_tensors()
    x = real["ffn_in"][real["real"]]             # (real tokens, 384), padding left out
    w = real["ffn1_weight"]                      # (1536, 384)
    what = f"smooth on MiniLM block 1's FFN input {tuple(x.shape)} and weight, alpha 0.5"
    gx, gw = _check_smooth_once(answer, what, x, w, 0.5)
    y = x.double() @ w.double().T
    drift = float((gx.double() @ gw.double().T - y).abs().max() / y.abs().max())
    if drift > 1e-5:
        raise CheckFailed(f"{what}: the product changed by {drift:.1e} of its largest value")
    before, after = _w8a8_sqnr(x, w, y), _w8a8_sqnr(gx, gw, y)
    passed(f"smoothing matches m_k = max|X_k|^alpha / max|W_k|^(1-alpha) on {len(cases)} "
           f"cases (alpha 0 and 1, a zero channel). On MiniLM (alpha 0.5) X W^T is unchanged, "
           f"max |X| falls from {float(x.abs().max()):.0f} to {float(gx.abs().max()):.1f}, and "
           f"the W8A8 output (X per tensor, W per channel) goes from {before:.0f} to "
           f"{after:.0f} dB SQNR")


# ---------------------------------------------------------------- bytes: W4A16 or W8A8


def _scheme_bytes(out_f: int, in_f: int, tokens: int, w_bits: int, a_bits: int) -> int:
    return math.ceil(out_f * in_f * w_bits / 8) + math.ceil(tokens * in_f * a_bits / 8)


def _scheme_reference(out_f: int, in_f: int, tokens: int) -> tuple[str, int, int]:
    w4a16, w8a8 = _scheme_bytes(out_f, in_f, tokens, 4, 16), _scheme_bytes(out_f, in_f, tokens,
                                                                            8, 8)
    return ("W4A16" if w4a16 < w8a8 else "W8A8"), w4a16, w8a8


_SCHEME_CASES = [
    # (out_features, in_features, tokens)
    (1536, 384, 1),        # MiniLM FFN-1, one token (generation)
    (1536, 384, 512),      # FFN-1, a batch of prompts
    (384, 1536, 512),      # FFN-2 at the same batch: the other answer
    (384, 1536, 192),      # FFN-2 exactly at its break-even point: a tie
    (384, 384, 64),        # an attention projection
    (384, 384, 4096),
    (5, 3, 2),             # an odd weight count at 4 bits: round up
    (7, 1, 3),             # rounding up makes a tie
]


def _scheme_hint(got: float, out_f: int, in_f: int, tokens: int, wb: int, ab: int) -> str:
    n = out_f * in_f
    acts = math.ceil(tokens * in_f * ab / 8)
    right = _scheme_bytes(out_f, in_f, tokens, wb, ab)
    return hint_for(got, [
        ("the weights are read once per forward pass, whatever the number of tokens: do not "
         "multiply them by tokens", math.ceil(n * wb / 8) * tokens + acts),
        ("each token brings in_features input values (a row of X), not out_features",
         math.ceil(n * wb / 8) + math.ceil(tokens * out_f * ab / 8)),
        ("every token brings its own activations: multiply the activation count by tokens",
         math.ceil(n * wb / 8) + math.ceil(in_f * ab / 8)),
        ("count both tensors: the weights and the input activations",
         math.ceil(n * wb / 8)),
        ("count both tensors: the weights and the input activations", acts),
        ("bytes = values x bits / 8: you counted bits", n * wb + tokens * in_f * ab),
        ("the weight bits and the activation bits are swapped",
         math.ceil(n * ab / 8) + math.ceil(tokens * in_f * wb / 8)),
        ("round the packed 4-bit weights up to whole bytes (math.ceil): half a byte still "
         "takes a byte", n * wb // 8 + acts),
        ("round the packed 4-bit weights up to whole bytes (math.ceil): half a byte still "
         "takes a byte", n * wb / 8 + acts),
    ], want=right, default="bytes = ceil(out_features * in_features * w_bits / 8) + "
                           "tokens * in_features * a_bits / 8")


@checker
def check_cheaper_scheme(answer) -> None:
    """``answer(out_features, in_features, tokens)`` -> (choice, w4a16_bytes, w8a8_bytes)."""
    for out_f, in_f, tokens in _SCHEME_CASES:
        what = (f"cheaper_scheme(out_features={out_f}, in_features={in_f}, "
                f"tokens={tokens})")
        got = call(answer, out_f, in_f, tokens, what=what)
        if not isinstance(got, (tuple, list)) or len(got) != 3:
            raise CheckFailed(f"{what}: expected a triple (choice, w4a16_bytes, w8a8_bytes), "
                              f"got {type(got).__name__}")
        choice, want_w4, want_w8 = _scheme_reference(out_f, in_f, tokens)
        for value, want, (name, wb, ab) in zip(got[1:], (want_w4, want_w8),
                                               (("W4A16", 4, 16), ("W8A8", 8, 8)), strict=True):
            v = float(one_number(value, f"{what}: {name} bytes"))
            if v != want:
                g, e = (f"{int(v):,}", f"{want:,}") if v.is_integer() else fmt_pair(v, want)
                raise CheckFailed(f"{what}: {name} bytes: expected {e}, got {g}. Hint: "
                                  f"{_scheme_hint(v, out_f, in_f, tokens, wb, ab)}")
        if got[0] != choice:
            hint = ("the bytes are equal: a tie goes to W8A8 (it also gets integer arithmetic)"
                    if want_w4 == want_w8 else
                    "return the name of the scheme with fewer bytes, 'W4A16' or 'W8A8'")
            raise CheckFailed(f"{what}: expected choice {choice!r}, got {got[0]!r}. Hint: {hint}")
    passed(f"bytes and choice right on {len(_SCHEME_CASES)} layers: W4A16 wins below "
           "out_features / 2 tokens, whatever in_features (FFN-1 up to 767, FFN-2 up to 191)")


# ---------------------------------------------------------------- per-token gain, real layer


def _gain_reference(x: torch.Tensor, real: torch.Tensor, bits: int, *, mask: bool = True,
                    symmetric: bool = False, axis: int = 0) -> float:
    rows = x[real] if mask else x.reshape(-1, x.shape[-1])
    make = symmetric_qparams if symmetric else asymmetric_qparams
    per_tensor = mse(rows, fake_quantize(rows, make(rows, bits)))
    per_rows = mse(rows, fake_quantize(rows, make(rows, bits, axis=axis)))
    return per_tensor / per_rows


def _gain_cases() -> list[tuple[str, torch.Tensor, torch.Tensor, int]]:
    g = torch.Generator().manual_seed(99)
    x = torch.randn(3, 6, 32, generator=g) * torch.linspace(0.5, 3, 6)[:, None]
    x[:, 0, 7] = 25.0                            # a [CLS]-like first token
    real = torch.ones(3, 6, dtype=torch.bool)
    real[1, 4:] = False
    real[2, 3:] = False
    x[~real] = 6.0 * torch.randn(int((~real).sum()), 32, generator=g)  # padding: meaningless
    skew = torch.nn.functional.gelu(3 * torch.randn(2, 5, 24, generator=g))
    full = torch.ones(2, 5, dtype=torch.bool)
    return [
        ("3 padded sentences (6 positions, 32 channels), 8 bits", x, real, 8),
        ("the same sentences, 4 bits", x, real, 4),
        ("GELU-like outputs without padding (2 x 5 x 24), 4 bits", skew, full, 4),
    ]


def _check_gain_once(answer, what: str, x, real, bits) -> float:
    got = float(one_number(call(answer, x.clone(), real.clone(), bits, what=what), what))
    want = _gain_reference(x, real, bits)
    if math.isfinite(got) and math.isclose(got, want, rel_tol=1e-4):
        return got
    hint = hint_for(got, [
        ("leave the padding rows out (x[real]) before quantizing: their values mean nothing "
         "and widen the per-tensor range", lambda: _gain_reference(x, real, bits, mask=False)),
        ("the ratio is upside down: per-tensor MSE over per-token MSE (above 1 when per token "
         "helps)", 1 / want),
        ("use asymmetric grids (qc.asymmetric_qparams), as the notebook's activation quantizer "
         "does", lambda: _gain_reference(x, real, bits, symmetric=True)),
        ("per token is one scale per row of the (tokens, hidden) matrix: axis=0, not axis=1 "
         "(that is per channel)", lambda: _gain_reference(x, real, bits, axis=1)),
    ], rtol=1e-4, want=want, default="MSE(per tensor) / MSE(per token) on the real rows x[real] "
                                     "(shape (tokens, hidden)), asymmetric grids of `bits` bits")
    g, e = fmt_pair(got, want)
    raise CheckFailed(f"{what}: expected {e}, got {g}. Hint: {hint}")


@checker
def check_token_gain(answer) -> None:
    """``answer(x, real, bits)``: MSE per tensor / MSE per token on the real rows of ``x``."""
    cases = _gain_cases()
    for name, x, real, bits in cases:
        _check_gain_once(answer, f"token_gain on {name}", x, real, bits)
    t = _minilm_tensors()
    measured = {}
    for bits in (8, 4):
        what = f"token_gain on MiniLM block 4's attention-output input, {bits} bits"
        measured[bits] = _check_gain_once(answer, what, t["attn_out_in"], t["real"], bits)
    n_real = int(t["real"].sum())
    passed(f"the gain matches on {len(cases)} cases (padding included). Block 4's "
           f"attention-output input ({n_real} real tokens): per token cuts the MSE "
           f"{measured[8]:.0f}x at 8 bits and {measured[4]:.0f}x at 4 bits; compare with "
           "your prediction")
