"""Plausible wrong answers for the checkers of 11_quantization_aware_training.ipynb."""

import torch
from torch import nn

import quantcourse as qc

# ----------------------------------------------------------------- check_fold_bn


def _b0(b, mean):
    return torch.zeros_like(mean) if b is None else b


def fold_var_not_std(w, b, mean, var, gamma, beta, eps):
    f = gamma / (var + eps)
    return w * f.reshape(-1, 1, 1, 1), (_b0(b, mean) - mean) * f + beta


def fold_eps_outside(w, b, mean, var, gamma, beta, eps):
    f = gamma / torch.sqrt(var)
    return w * f.reshape(-1, 1, 1, 1), (_b0(b, mean) - mean) * f + beta


def fold_beta_scaled(w, b, mean, var, gamma, beta, eps):
    f = gamma / torch.sqrt(var + eps)
    return w * f.reshape(-1, 1, 1, 1), (_b0(b, mean) - mean + beta) * f


def fold_drops_conv_bias(w, b, mean, var, gamma, beta, eps):
    f = gamma / torch.sqrt(var + eps)
    return w * f.reshape(-1, 1, 1, 1), -mean * f + beta


# ----------------------------------------------------------------- check_lsq_asymmetric_grads


def _q(x, s, z):
    return torch.round(x / s) + z


def lsq_zero_inside(x, s, z, qmin, qmax, dy):
    # the straight-through rule of x applied to the scale: nothing flows inside the grid
    q = _q(x, s, z)
    ds = torch.where(q < qmin, qmin - z, torch.where(q > qmax, qmax - z, 0.0))
    dz = torch.where((q < qmin) | (q > qmax), -s, 0.0)
    return (dy * ds).sum(), (dy * dz).sum()


def lsq_clip_without_zero_point(x, s, z, qmin, qmax, dy):
    q = _q(x, s, z)
    inside = (q >= qmin) & (q <= qmax)
    ds = torch.where(inside, torch.clamp(q, qmin, qmax) - z - x / s,
                     torch.where(q < qmin, float(qmin), float(qmax)))
    dz = torch.where(inside, 0.0, -s)
    return (dy * ds).sum(), (dy * dz).sum()


def lsq_right_scale_zero_point_everywhere(x, s, z, qmin, qmax, dy):
    q = _q(x, s, z)
    inside = (q >= qmin) & (q <= qmax)
    ds = torch.where(inside, q - z - x / s, torch.where(q < qmin, qmin - z, qmax - z))
    return (dy * ds).sum(), (dy * -s).sum()


# ----------------------------------------------------------------- check_deploy_conv


def _conv_with(conv, bn, weight):
    folded = qc.fold_bn(conv, bn)
    with torch.no_grad():
        folded.weight.copy_(weight)
    return folded


def deploy_quantize_then_fold(conv, bn, bits):
    wq = qc.quantize_weight(conv.weight.detach(), bits, granularity="tensor")[0]
    f = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
    return _conv_with(conv, bn, wq * f.reshape(-1, 1, 1, 1))


def deploy_per_channel(conv, bn, bits):
    folded = qc.fold_bn(conv, bn)
    return _conv_with(conv, bn, qc.quantize_weight(folded.weight.detach(), bits)[0])


def deploy_no_bias(conv, bn, bits):
    folded = qc.fold_bn(conv, bn)
    out = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding,
                    bias=False)
    with torch.no_grad():
        out.weight.copy_(qc.quantize_weight(folded.weight.detach(), bits, granularity="tensor")[0])
    return out


WRONG_ANSWERS = {
    "check_fold_bn": [
        (fold_var_not_std, "not by the variance"),
        (fold_eps_outside, "inside the square root"),
        (fold_beta_scaled, "added after scaling"),
        (fold_drops_conv_bias, "own bias"),
    ],
    "check_lsq_asymmetric_grads": [
        (lsq_zero_inside, "not 0 as for x"),
        (lsq_clip_without_zero_point, "zero point included"),
        (lsq_right_scale_zero_point_everywhere, "only where the input is clipped"),
    ],
    "check_deploy_conv": [
        (deploy_quantize_then_fold, "fold first"),
        (deploy_per_channel, "one scale per tensor"),
        (deploy_no_bias, "needs a bias"),
    ],
}
