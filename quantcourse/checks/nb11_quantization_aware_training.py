"""Checkers for the exercises of ``11_quantization_aware_training.ipynb``."""

from __future__ import annotations

import torch
from torch import nn

from ..models_bn import digits_cnn_bn
from ..nn import quantize_weight
from ..qat import fold_bn
from ._core import CheckFailed, as_tensor, call, checker, expect_close, hint_for, passed


def _bn_pairs():
    """Random conv + BatchNorm pairs (with and without a conv bias) and the digits BN CNN's."""
    gen = torch.Generator().manual_seed(11)
    pairs = []
    for bias, cin, cout in ((True, 3, 5), (False, 2, 4)):
        conv = nn.Conv2d(cin, cout, 3, bias=bias)
        bn = nn.BatchNorm2d(cout, eps=1e-3)
        with torch.no_grad():
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.3)
            if bias:
                conv.bias.copy_(torch.randn(cout, generator=gen))
            bn.running_mean.copy_(torch.randn(cout, generator=gen))
            bn.running_var.copy_(torch.rand(cout, generator=gen) * 2 + 0.01)
            bn.weight.copy_(torch.randn(cout, generator=gen))
            bn.bias.copy_(torch.randn(cout, generator=gen))
        pairs.append((f"a random {cin}->{cout} conv{' with' if bias else ' without'} bias",
                      conv.eval(), bn.eval()))
    model = digits_cnn_bn()
    pairs += [("the digits BN CNN's conv1 + bn1", model.conv1, model.bn1),
              ("the digits BN CNN's conv2 + bn2", model.conv2, model.bn2)]
    return pairs


def _parts(conv, bn):
    bias = conv.bias.detach().clone() if conv.bias is not None else None
    return (conv.weight.detach().clone(), bias, bn.running_mean.clone(),
            bn.running_var.clone(), bn.weight.detach().clone(), bn.bias.detach().clone(), bn.eps)


@checker
def check_fold_bn(answer) -> None:
    """``answer(w, b, mean, var, gamma, beta, eps)`` -> the folded ``(w', b')``; ``b`` may be
    None."""
    for what, conv, bn in _bn_pairs():
        w, b, mean, var, gamma, beta, eps = _parts(conv, bn)
        got = call(answer, w, b, mean, var, gamma, beta, eps, what=what)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise CheckFailed(f"{what}: return a pair (folded weight, folded bias)")
        want = fold_bn(conv, bn)
        gw, gb = as_tensor(got[0], f"{what}: weight"), as_tensor(got[1], f"{what}: bias")
        b0 = torch.zeros_like(mean) if b is None else b
        std = torch.sqrt(var + eps)
        weight_mistakes = {
            "divide by sqrt(var + eps), the standard deviation, not by the variance":
                w * (gamma / (var + eps)).reshape(-1, 1, 1, 1),
            "eps belongs inside the square root: sqrt(var + eps)":
                w * (gamma / torch.sqrt(var)).reshape(-1, 1, 1, 1),
            "each output channel (axis 0 of the weight) gets its own factor gamma / std":
                w * (gamma / std).reshape(1, -1, 1, 1)[:, : w.shape[1]]
                if w.shape[1] == w.shape[0] else None,
        }
        bias_mistakes = {
            "the running mean is subtracted before scaling: (b - mean) * gamma / std + beta":
                (b0 - mean * gamma / std) + beta,
            "the shift beta is added after scaling, not scaled": (b0 - mean + beta) * gamma / std,
            "keep the BatchNorm's shift beta in the folded bias": (b0 - mean) * gamma / std,
            "the convolution's own bias is folded too: (b - mean), not (-mean)":
                -mean * gamma / std + beta,
        }
        if gw.shape == want.weight.shape and not torch.allclose(
                gw.double(), want.weight.double(), rtol=1e-5, atol=1e-6):
            hint = hint_for(gw, weight_mistakes, rtol=1e-5, atol=1e-6,
                            default="W' = W * gamma / sqrt(var + eps), one factor per output "
                                    "channel")
            expect_close(gw, want.weight, f"{what}: folded weight", rtol=1e-5, atol=1e-6,
                         hint=hint)
        expect_close(gw, want.weight, f"{what}: folded weight", rtol=1e-5, atol=1e-6)
        hint = hint_for(gb, bias_mistakes, rtol=1e-5, atol=1e-6,
                        default="b' = (b - mean) * gamma / sqrt(var + eps) + beta")
        expect_close(gb, want.bias, f"{what}: folded bias", rtol=1e-5, atol=1e-6, hint=hint)
    passed("your folded weights and biases match qc.fold_bn on random pairs and on the "
           "digits BN CNN")


@checker
def check_lsq_asymmetric_grads(answer) -> None:
    """``answer(x, s, z, qmin, qmax, dy)`` -> ``(d_scale, d_zero_point)`` of the fake-quantized
    ``x`` (summed over all elements, no gradient scaling), as PyTorch's learnable op gives."""
    gen = torch.Generator().manual_seed(5)
    cases = [(torch.randn(200, generator=gen) * 2, 0.15, 7.0, 0, 15),
             (torch.rand(300, generator=gen) * 3 - 0.5, 0.01, 40.0, 0, 255),
             (torch.randn(64, generator=gen), 0.4, 0.0, -7, 7)]
    for x, s, z, qmin, qmax in cases:
        what = f"x of {x.numel()} values, s={s}, z={z:g}, grid [{qmin}, {qmax}]"
        dy = torch.randn(x.shape, generator=gen)
        st, zt = torch.tensor([s], requires_grad=True), torch.tensor([z], requires_grad=True)
        out = torch._fake_quantize_learnable_per_tensor_affine(x, st, zt, qmin, qmax, 1.0)
        out.backward(dy)
        got = call(answer, x.clone(), s, z, qmin, qmax, dy.clone(), what=what)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise CheckFailed(f"{what}: return a pair (d_scale, d_zero_point)")
        ds, dz = (as_tensor(g, what).detach().double().reshape(()) for g in got)
        q = torch.round(x / s) + z
        inside = (q >= qmin) & (q <= qmax)
        mistakes = {
            "inside the grid the scale still gets round(x/s) - x/s (LSQ), not 0 as for x":
                ((dy * torch.where(q < qmin, qmin - z, qmax - z)) * ~inside).sum(),
            "outside the grid the output is s * (qmin - z) or s * (qmax - z): its derivative "
            "is (qmin - z) or (qmax - z), the zero point included":
                (dy * torch.where(inside, torch.clamp(q, qmin, qmax) - z - x / s,
                                  torch.where(q < qmin, float(qmin), float(qmax)))).sum(),
            "check the sign: inside the grid d/ds is (round(x/s) + z - z) - x/s, the "
            "rounding error with x/s subtracted": (dy * torch.where(inside, x / s - (q - z),
                                               torch.where(q < qmin, qmin - z, qmax - z))).sum(),
        }
        hint = hint_for(ds, mistakes, rtol=1e-4, atol=1e-4)
        expect_close(ds, st.grad.double().reshape(()), f"{what}: d_scale", rtol=1e-4,
                     atol=1e-4, hint=hint)
        z_hint = ("the zero point moves the output only where the input is clipped: "
                  "-s there, 0 inside the grid")
        expect_close(dz, zt.grad.double().reshape(()), f"{what}: d_zero_point", rtol=1e-4,
                     atol=1e-4, hint=z_hint)
    passed("your scale and zero-point gradients match torch._fake_quantize_learnable_"
           "per_tensor_affine")


@checker
def check_deploy_conv(answer) -> None:
    """``answer(conv, bn, bits)`` -> the ``nn.Conv2d`` to deploy on a chip with one weight scale
    per tensor: BatchNorm folded, weight symmetric per-tensor fake-quantized at ``bits``, bias
    in float."""
    for what, conv, bn in _bn_pairs():
        for bits in (4, 3):
            label = f"{what} at {bits} bits"
            got = call(answer, conv, bn, bits, what=label)
            if not isinstance(got, nn.Conv2d):
                raise CheckFailed(f"{label}: return an nn.Conv2d, got {type(got).__name__}")
            folded = fold_bn(conv, bn)
            want_w = quantize_weight(folded.weight.detach(), bits, granularity="tensor")[0]
            w_first = quantize_weight(conv.weight.detach(), bits, granularity="tensor")[0]
            factor = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
            mistakes = {
                "quantize the weight that is stored, after folding: fold first, then quantize "
                "(quantize-then-fold stretches each channel's grid by its own gamma / std)":
                    w_first * factor.reshape(-1, 1, 1, 1),
                "the chip has one scale per tensor, not one per output channel":
                    quantize_weight(folded.weight.detach(), bits)[0],
                "forgot to fold: the BatchNorm's factor gamma / std is missing":
                    w_first,
            }
            gw = got.weight.detach()
            hint = hint_for(gw, mistakes, rtol=1e-5, atol=1e-6)
            expect_close(gw, want_w, f"{label}: weight", rtol=1e-5, atol=1e-6, hint=hint)
            if got.bias is None:
                raise CheckFailed(f"{label}: the folded convolution needs a bias "
                                  "(the BatchNorm's shift)")
            expect_close(got.bias.detach(), folded.bias.detach(), f"{label}: bias", rtol=1e-5,
                         atol=1e-6, hint="keep the folded bias in float")
    passed("your deployed convolutions fold, then quantize per tensor, as qc.fold_bn and "
           "qc.quantize_weight(..., granularity='tensor') do")
