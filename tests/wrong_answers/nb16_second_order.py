"""Plausible wrong answers for the checkers of 16_second_order.ipynb."""

import torch

import quantcourse as qc

# ----------------------------------------------------------------- check_hutchinson_variance


def variance_with_diagonal(a):
    # counts the diagonal too, though v_i^2 = 1 makes it constant
    return 2 * float((a**2).sum())


def variance_half(a):
    # forgets that (i, j) and (j, i) are the same pair
    off = a - torch.diag(torch.diagonal(a))
    return float((off**2).sum())


# ----------------------------------------------------------------- check_obs_update


def _rtn_col(w, j, bits):
    qp = qc.symmetric_qparams(w, bits, axis=0)
    return qc.fake_quantize(w, qp)[:, j]


def obs_no_division(w, hinv, j, bits):
    q = _rtn_col(w, j, bits)
    out = w - (w[:, j] - q).unsqueeze(1) * hinv[j].unsqueeze(0)
    out[:, j] = q
    return out


def obs_no_compensation(w, hinv, j, bits):
    out = w.clone()
    out[:, j] = _rtn_col(w, j, bits)
    return out


# ----------------------------------------------------------------- check_fc1_gptq


def fc1_rtn(cnn, images, bits):
    w = cnn.fc1.weight.detach()
    return qc.fake_quantize(w, qc.symmetric_qparams(w, bits, axis=0))


def fc1_without_relu(cnn, images, bits):
    # rebuilds fc1's input by hand but forgets the ReLU after conv2
    with torch.no_grad():
        h = torch.relu(cnn.conv1(images))
        x = cnn.pool(cnn.conv2(h)).flatten(1)
    return qc.gptq(cnn.fc1.weight.detach(), qc.gptq_hessian(x), bits)[0]


WRONG_ANSWERS = {
    "check_hutchinson_variance": [(variance_with_diagonal, "diagonal"),
                                  (variance_half, "twice")],
    "check_obs_update": [(obs_no_division, "[H^-1]_jj"), (obs_no_compensation, "did not change")],
    "check_fc1_gptq": [(fc1_rtn, "round-to-nearest"), (fc1_without_relu, "pre-hook")],
}
