"""Plausible wrong answers for the checkers of 02_scale_and_zero_point.ipynb."""

import torch

import quantcourse as qc

# ----------------------------------------------------------------- check_clip_factor


def _clipped(w, bits, c):
    return qc.asymmetric_qparams(torch.stack([c * w.min(), c * w.max()]), bits)


def clip_inside_only(w, bits, factors):
    # the error of the values inside the grid only: smaller ranges always look better
    errs = []
    for c in factors:
        qp = _clipped(w, bits, c)
        lo = float(qp.scale) * (qp.qmin - int(qp.zero_point))
        hi = float(qp.scale) * (qp.qmax - int(qp.zero_point))
        inside = (w >= lo) & (w <= hi)
        errs.append(qc.mse(w[inside], qc.fake_quantize(w, qp)[inside]))
    return factors[errs.index(min(errs))]


def clip_max_error(w, bits, factors):
    errs = [qc.max_abs_error(w, qc.fake_quantize(w, _clipped(w, bits, c))) for c in factors]
    return factors[errs.index(min(errs))]


def clip_returns_index(w, bits, factors):
    errs = [qc.mse(w, qc.fake_quantize(w, _clipped(w, bits, c))) for c in factors]
    return errs.index(min(errs))


# ----------------------------------------------------------------- check_mse_prediction


def _ends(qp):
    s, z = float(qp.scale), int(qp.zero_point)
    return s, s * (qp.qmin - z), s * (qp.qmax - z)


def mse_measured(x, qp):
    return qc.mse(x, qc.fake_quantize(x, qp))


def mse_no_clipping_term(x, qp):
    return float(qp.scale) ** 2 / 12


def mse_rounding_for_all(x, qp):
    s, lo, hi = _ends(qp)
    clip = torch.clamp(x.double(), lo, hi) - x.double()
    return s**2 / 12 + float((clip**2).mean())


def mse_half_step_squared(x, qp):
    s, lo, hi = _ends(qp)
    inside = (x >= lo) & (x <= hi)
    clip = torch.clamp(x.double(), lo, hi) - x.double()
    return float((inside.sum() * (s / 2) ** 2 + (clip**2).sum()) / x.numel())


def mse_ends_without_zero_point(x, qp):
    s = float(qp.scale)
    lo, hi = s * qp.qmin, s * qp.qmax
    inside = (x >= lo) & (x <= hi)
    clip = torch.clamp(x.double(), lo, hi) - x.double()
    return float((inside.sum() * s**2 / 12 + (clip**2).sum()) / x.numel())


# ----------------------------------------------------------------- check_quantize


def rows_wrong_axis(x, scale, zero_point, qmin, qmax):
    # a 1-D scale broadcasts along the last dimension: column k gets scale[k]
    return torch.clamp(torch.round(x * (1 / scale)) + zero_point, qmin, qmax)


def rows_divide(x, scale, zero_point, qmin, qmax):
    s, z = scale.reshape(-1, 1), zero_point.reshape(-1, 1)
    return torch.clamp(torch.round(x / s) + z, qmin, qmax)


def rows_zero_point_before_round(x, scale, zero_point, qmin, qmax):
    s, z = scale.reshape(-1, 1), zero_point.reshape(-1, 1)
    return torch.clamp(torch.round(x * (1 / s) + z), qmin, qmax)


def rows_no_clamp(x, scale, zero_point, qmin, qmax):
    s, z = scale.reshape(-1, 1), zero_point.reshape(-1, 1)
    return torch.round(x * (1 / s)) + z


def rows_cast_truncates(x, scale, zero_point, qmin, qmax):
    s, z = scale.reshape(-1, 1), zero_point.reshape(-1, 1)
    return torch.clamp((x * (1 / s)).to(torch.int32) + z, qmin, qmax)


def rows_calls_the_package(x, scale, zero_point, qmin, qmax):
    # the task asks for the arithmetic, not for qc.quantize
    return qc.quantize(x, qc.QParams(scale, zero_point, qmin, qmax, axis=0))


WRONG_ANSWERS = {
    "check_clip_factor": [
        (clip_inside_only, "inside the grid only"),
        (clip_max_error, "mean squared error"),
        (clip_returns_index, "position in the list"),
    ],
    "check_mse_prediction": [
        (mse_measured, "measured"),
        (mse_no_clipping_term, "distance to the end"),
        (mse_rounding_for_all, "no rounding error on top"),
        (mse_half_step_squared, "(s/2)^2"),
        (mse_ends_without_zero_point, "subtract the zero point"),
    ],
    "check_quantize": [
        (rows_wrong_axis, "belong to row j"),
        (rows_divide, "reciprocal"),
        (rows_zero_point_before_round, "after rounding"),
        (rows_no_clamp, "clamp"),
        (rows_cast_truncates, "torch.round"),
        (rows_calls_the_package, "without the package"),
    ],
}
