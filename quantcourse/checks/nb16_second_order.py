"""Checkers for the exercises of ``16_second_order.ipynb``."""

from __future__ import annotations

import torch

from ..affine import fake_quantize, symmetric_qparams
from ..data import digits_data
from ..hessian import gptq, gptq_hessian
from ..models import digits_cnn
from ._core import CheckFailed, as_tensor, call, checker, fmt, one_number, passed

# --------------------------------------------------------------------------- Hutchinson variance


def _sym(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g, dtype=torch.float64)
    return (a + a.T) / 2 + torch.diag(torch.rand(n, generator=g, dtype=torch.float64) * 3)


@checker
def check_hutchinson_variance(answer) -> None:
    """``answer(A)`` -> the variance of one Rademacher sample ``v^T A v`` (A symmetric)."""
    for n, seed in ((2, 0), (5, 1), (8, 2)):
        a = _sym(n, seed)
        what = f"variance of v^T A v for a symmetric {n}x{n} matrix"
        got = one_number(call(answer, a.clone(), what=what), what)
        off = a - torch.diag(torch.diagonal(a))
        want = 2 * float((off**2).sum())
        if abs(float(got) - want) > 1e-9 * max(1.0, want):
            hint = "v_i^2 = 1, so the diagonal adds a constant: it has no variance"
            if abs(float(got) - 2 * float((a**2).sum())) < 1e-9 * want:
                pass
            elif abs(float(got) - want / 2) < 1e-9 * want:
                hint = ("each off-diagonal pair (i, j), (j, i) appears twice in v^T A v: "
                        "count the covariance of both")
            raise CheckFailed(f"{what}: expected {want:.6g}, got {fmt(float(got))}. Hint: {hint}")
    passed("the variance of Hutchinson's estimator is 2 * (sum of squared off-diagonal entries)")


# --------------------------------------------------------------------------- OBS update


def _obs_reference(w: torch.Tensor, hinv: torch.Tensor, j: int, bits: int) -> torch.Tensor:
    qp = symmetric_qparams(w, bits, axis=0)
    s = qp.scale
    q = torch.clamp(torch.round(w[:, j] * torch.reciprocal(s)), qp.qmin, qp.qmax) * s
    err = (w[:, j] - q) / hinv[j, j]
    out = w - err.unsqueeze(1) * hinv[j].unsqueeze(0)
    out[:, j] = q
    return out


@checker
def check_obs_update(answer) -> None:
    """``answer(w, hinv, j, bits)`` -> ``w`` after quantizing column ``j`` and compensating."""
    g = torch.Generator().manual_seed(15)
    for rows, cols, j, bits in ((4, 6, 0, 4), (5, 8, 3, 3), (3, 5, 4, 2)):
        what = f"OBS step on a {rows}x{cols} weight, column {j}, {bits} bits"
        w = torch.randn(rows, cols, generator=g, dtype=torch.float64)
        x = torch.randn(3 * cols, cols, generator=g, dtype=torch.float64)
        h = 2 * x.T @ x
        hinv = torch.linalg.inv(h)
        got = as_tensor(call(answer, w.clone(), hinv.clone(), j, bits, what=what), what)
        want = _obs_reference(w, hinv, j, bits)
        if got.shape != want.shape:
            raise CheckFailed(f"{what}: expected shape {tuple(want.shape)}, got {tuple(got.shape)}")
        got = got.double()
        rtn = fake_quantize(w, symmetric_qparams(w, bits, axis=0))
        if not torch.allclose(got[:, j], want[:, j], atol=1e-6):
            raise CheckFailed(f"{what}: column {j} must hold its round-to-nearest value on the "
                              "per-channel symmetric grid of the original weight")
        if torch.allclose(got, rtn.where(torch.arange(cols) == j, w), atol=1e-9):
            raise CheckFailed(f"{what}: the other columns did not change; spread the rounding "
                              "error onto them with the inverse Hessian")
        if not torch.allclose(got, want, rtol=1e-6, atol=1e-8):
            hint = "delta = -(w_j - q_j) / [H^-1]_jj * (row j of H^-1)"
            bad_div = w - (w[:, j] - want[:, j]).unsqueeze(1) * hinv[j].unsqueeze(0)
            bad_div[:, j] = want[:, j]
            if torch.allclose(got, bad_div, rtol=1e-6, atol=1e-8):
                hint = "divide the error by the diagonal entry [H^-1]_jj"
            raise CheckFailed(f"{what}: the compensation of the other columns differs from the "
                              f"OBS update. Hint: {hint}")
    passed("your step quantizes one column and moves the others along row j of H^-1")


# --------------------------------------------------------------------------- GPTQ on fc1


def _fc1_reference(cnn, images, bits):
    box = {}
    hook = cnn.fc1.register_forward_pre_hook(lambda m, a: box.setdefault("x", a[0].detach()))
    try:
        with torch.no_grad():
            cnn(images)
    finally:
        hook.remove()
    return gptq(cnn.fc1.weight.detach(), gptq_hessian(box["x"]), bits)[0], box["x"]


@checker
def check_fc1_gptq(answer) -> None:
    """``answer(cnn, images, bits)`` -> fc1's weight quantized by GPTQ on its own inputs."""
    images = digits_data().x_train[:300]
    for bits in (3, 4):
        what = f"GPTQ on the digits CNN's fc1 at {bits} bits"
        cnn = digits_cnn()
        got = as_tensor(call(answer, cnn, images.clone(), bits, what=what), what)
        fresh = digits_cnn()
        want, x = _fc1_reference(fresh, images, bits)
        if got.shape != want.shape:
            raise CheckFailed(f"{what}: expected fc1's weight shape {tuple(want.shape)}, got "
                              f"{tuple(got.shape)}")
        got = got.detach().float()
        if torch.allclose(got, want, atol=1e-5):
            continue
        w = fresh.fc1.weight.detach()
        if torch.equal(got, fake_quantize(w, symmetric_qparams(w, bits, axis=0))):
            raise CheckFailed(f"{what}: this is round-to-nearest; run qc.gptq with the Hessian "
                              "of fc1's calibration inputs")
        err_got = float(((got - w) @ x.T).pow(2).sum())
        err_want = float(((want - w) @ x.T).pow(2).sum())
        raise CheckFailed(f"{what}: the weight differs from GPTQ calibrated on fc1's actual "
                          f"inputs (layer-output error {err_got:.4g}, expected "
                          f"{err_want:.4g}); capture what fc1 receives with a forward "
                          "pre-hook on cnn.fc1")
    passed("GPTQ on fc1, calibrated on the inputs fc1 really receives")
