"""Checkers for the exercises of ``18_gradient_quantization.ipynb``."""

from __future__ import annotations

import math

import torch

from ..gradients import qsgd_encode, sign_encode
from ._core import CheckFailed, as_tensor, call, checker, expect_close, hint_for, one_number, passed

# --------------------------------------------------------------------------- bytes on the wire

_WIRE_CASES = [
    (38_090, "qsgd", 16, 128), (38_090, "qsgd", 7, 128), (38_090, "qsgd", 1, 128),
    (38_090, "sign", 1, 128), (1000, "qsgd", 2, 64), (1001, "sign", 1, 10),
    (5, "qsgd", 127, 512), (129, "qsgd", 8, 128), (12, "sign", 1, 5),
]


@checker
def check_wire_bytes(answer) -> None:
    """``answer(numel, kind, levels, chunk)`` -> bytes that payload puts on the wire."""
    for numel, kind, levels, chunk in _WIRE_CASES:
        what = f"bytes for {numel} elements, {kind}, levels={levels}, chunk={chunk}"
        got = one_number(call(answer, numel, kind, levels, chunk, what=what), what)
        g = torch.randn(numel, generator=torch.Generator().manual_seed(numel))
        c = (qsgd_encode(g, levels, chunk=chunk) if kind == "qsgd"
             else sign_encode(g, chunk=chunk))
        want = c.nbytes
        if float(got) != want:
            n_chunks = -(-numel // chunk)
            if float(got) == want - 4 * n_chunks:
                hint = "each chunk also sends its float32 scale (4 bytes)"
            elif kind == "qsgd" and float(got) == numel + 4 * n_chunks:
                hint = ("codes in [-s, s] travel in the smallest packable width: 2 bits for "
                        "s = 1, 4 bits up to s = 7, 8 bits up to 127")
            elif float(got) == want - 4:
                hint = "a partial last chunk still has its own scale: round the chunk count up"
            else:
                hint = "packed codes take ceil(numel * bits / 8) bytes"
            raise CheckFailed(f"{what}: expected {want} bytes, got {float(got):g}. Hint: {hint}")
    passed("your byte counts match the payloads qc.qsgd_encode and qc.sign_encode build")


# --------------------------------------------------------------------------- exact QSGD variance


def _exact_variance(g: torch.Tensor, s: int, chunk: int) -> float:
    total = 0.0
    for block in g.double().reshape(-1).split(chunk):
        norm = block.norm()
        if norm == 0:
            continue
        r = s * block.abs() / norm
        p = r - r.floor()
        total += float(((norm / s) ** 2 * p * (1 - p)).sum())
    return total


@checker
def check_qsgd_variance(answer) -> None:
    """``answer(g, levels, chunk)`` -> the exact ``E||Q(g) - g||^2`` of QSGD (a number)."""
    gen = torch.Generator().manual_seed(17)
    cases = [
        (torch.tensor([3.0, -4.0]), 5, 2),
        (torch.tensor([1.0, 1.0, 1.0, 1.0]), 1, 4),
        (torch.randn(200, generator=gen), 4, 64),
        (torch.randn(300, generator=gen) ** 3, 16, 128),
        (torch.cat([torch.zeros(8), torch.randn(50, generator=gen)]), 2, 8),
    ]
    for g, s, chunk in cases:
        what = f"E||Q(g) - g||^2 for {g.numel()} elements, levels={s}, chunk={chunk}"
        got = one_number(call(answer, g.clone(), s, chunk, what=what), what)
        want = _exact_variance(g, s, chunk)
        if not math.isclose(float(got), want, rel_tol=1e-4, abs_tol=1e-9):
            bound = sum(min(chunk / s**2, math.sqrt(chunk) / s) * float(b.double().norm() ** 2)
                        for b in g.split(chunk))
            hint = hint_for(float(got), {
                "that is the worst-case bound; the exact variance sums, per element, "
                "(norm/s)^2 p (1 - p) with p the fractional part of s|g_i|/norm": bound,
                "sum over the elements, do not average": want / g.numel() if want > 0 else None,
            }, rtol=1e-4, default="each element is one of two neighbouring levels (norm/s) * l "
                                  "and (norm/s) * (l + 1), the upper one with probability p: its "
                                  "variance is (norm/s)^2 p (1 - p); every chunk has its own norm")
            raise CheckFailed(f"{what}: expected {want:.6g}, got {float(got):.6g}. Hint: {hint}")
    passed("your exact variance matches QSGD's definition on every case")


# --------------------------------------------------------------------------- top-k error feedback


def _topk_ef(g: torch.Tensor, residual: torch.Tensor, k: int):
    corrected = g + residual
    sent = torch.zeros_like(corrected)
    idx = corrected.abs().topk(k).indices
    sent[idx] = corrected[idx]
    return sent, corrected - sent


@checker
def check_topk_error_feedback(answer) -> None:
    """``answer(g, residual, k)`` -> ``(sent, new_residual)`` for top-k with error feedback."""
    gen = torch.Generator().manual_seed(5)
    n, k = 64, 6
    residual_got = torch.zeros(n)
    residual_want = torch.zeros(n)
    for step in range(6):
        g = torch.randn(n, generator=gen)
        what = f"step {step}"
        out = call(answer, g.clone(), residual_got.clone(), k, what=what)
        if not isinstance(out, tuple) or len(out) != 2:
            raise CheckFailed(f"{what}: expected a pair (sent, new_residual)")
        sent, residual_got = (as_tensor(t, what).detach().float() for t in out)
        sent_want, residual_want = _topk_ef(g, residual_want, k)
        if sent.shape != sent_want.shape:
            raise CheckFailed(f"{what}: sent has shape {tuple(sent.shape)}, expected ({n},)")
        if int((sent != 0).sum()) != k:
            raise CheckFailed(f"{what}: expected exactly {k} nonzero values sent, got "
                              f"{int((sent != 0).sum())}")
        hint = ("choose the k largest |g + residual| and send those values of g + residual; "
                "the new residual is g + residual minus what was sent")
        if step > 0 and torch.equal(sent.nonzero(), _topk_ef(g, torch.zeros(n), k)[0].nonzero()) \
                and not torch.equal(sent.nonzero(), sent_want.nonzero()):
            hint = "select from g + residual, not from g alone: the residual must get its turn"
        expect_close(sent, sent_want, f"{what}: values sent", rtol=1e-6, atol=1e-6, hint=hint)
        expect_close(residual_got, residual_want, f"{what}: new residual", rtol=1e-6, atol=1e-6,
                     hint="nothing may be lost: new residual = g + residual - sent")
    passed("your top-k compressor keeps every coordinate's unsent part for later")
