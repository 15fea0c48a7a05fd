"""Plausible wrong answers for the checkers of 04_asymmetric.ipynb."""

import quantcourse as qc

# ---------------------------------------------------------------- check_sym_vs_asym


def _measured(x, bits):
    errs = [qc.mse(x, qc.fake_quantize(x, qp))
            for qp in (qc.symmetric_qparams(x, bits), qc.asymmetric_qparams(x, bits))]
    return errs[0] / errs[1]


def _steps(x, bits):
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    return max(-lo, hi) / (2 ** (bits - 1) - 1), (hi - lo) / (2**bits - 1)


def sva_relu_factor_everywhere(x, bits):  # the ReLU prediction for every tensor
    return ((2**bits - 1) / (2 ** (bits - 1) - 1)) ** 2, _measured(x, bits)


def sva_not_squared(x, bits):  # the ratio of the steps, not of the MSEs
    s_sym, s_asym = _steps(x, bits)
    return s_sym / s_asym, _measured(x, bits)


def sva_levels(x, bits):  # 2^b levels and 2^(b-1), not steps
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    return ((max(-lo, hi) / 2 ** (bits - 1)) / ((hi - lo) / 2**bits)) ** 2, _measured(x, bits)


def sva_not_widened(x, bits):  # asymmetric range [min, max] as it is
    s_sym = float(x.abs().max()) / (2 ** (bits - 1) - 1)
    s_asym = float(x.max() - x.min()) / (2**bits - 1)
    return (s_sym / s_asym) ** 2, _measured(x, bits)


def sva_inverted(x, bits):  # asymmetric over symmetric
    s_sym, s_asym = _steps(x, bits)
    return (s_sym / s_asym) ** 2, 1 / _measured(x, bits)


def sva_measured_is_prediction(x, bits):  # no measurement at all
    s_sym, s_asym = _steps(x, bits)
    return (s_sym / s_asym) ** 2, (s_sym / s_asym) ** 2


# ---------------------------------------------------------------- check_fold_zero_points


def fz_no_constant(Q_W, z_X, z_W, bias_q):
    return bias_q.long() - z_X * Q_W.long().sum(1)


def fz_sign_error(Q_W, z_X, z_W, bias_q):
    K = Q_W.shape[1]
    return bias_q.long() + z_X * Q_W.long().sum(1) - K * z_X * z_W.long()


def fz_wrong_axis(Q_W, z_X, z_W, bias_q):  # sums over the out-features
    return -z_X * Q_W.long().sum(0)


def fz_uint8_wraps(Q_W, z_X, z_W, bias_q):  # K * z_X * z_W stays uint8 and wraps
    K = Q_W.shape[1]
    return bias_q.long() - z_X * Q_W.long().sum(1) + (K * z_X * z_W).long()


def fz_without_bias(Q_W, z_X, z_W, bias_q):
    K = Q_W.shape[1]
    return -z_X * Q_W.long().sum(1) + K * z_X * z_W.long()


def fz_out_features_as_k(Q_W, z_X, z_W, bias_q):  # N in the constant term, not K
    N = Q_W.shape[0]
    return bias_q.long() - z_X * Q_W.long().sum(1) + N * z_X * z_W.long()


# ---------------------------------------------------------------- check_asym_weight_layers


def _gain_layers(model, bits, thr, *, axis=0, sign=1.0, ratio=False):
    chosen = []
    for name, layer in qc.quantizable_layers(model).items():
        w = layer.weight.detach()
        w_s = qc.fake_quantize(w, qc.symmetric_qparams(w, bits, axis=axis))
        w_a = qc.fake_quantize(w, qc.asymmetric_qparams(w, bits, axis=axis))
        gain = qc.mse(w, w_s) / qc.mse(w, w_a) if ratio else qc.sqnr_db(w, w_a) - qc.sqnr_db(w, w_s)
        if sign * gain >= thr:
            chosen.append(name)
    return chosen


def awl_per_tensor(model, bits, min_gain_db):
    return _gain_layers(model, bits, min_gain_db, axis=None)


def awl_sign_reversed(model, bits, min_gain_db):
    return _gain_layers(model, bits, min_gain_db, sign=-1.0)


def awl_mse_ratio(model, bits, min_gain_db):
    return _gain_layers(model, bits, min_gain_db, ratio=True)


def awl_returns_one_string(model, bits, min_gain_db):
    return ",".join(_gain_layers(model, bits, min_gain_db))


WRONG_ANSWERS = {
    "check_sym_vs_asym": [
        (sva_relu_factor_everywhere, "data in [0, max] only"),
        (sva_not_squared, "square the ratio"),
        (sva_levels, "count steps, not levels"),
        (sva_not_widened, "widen"),
        (sva_inverted, "not the other way round"),
        (sva_measured_is_prediction, "that is the prediction"),
    ],
    "check_fold_zero_points": [
        (fz_no_constant, "constant term"),
        (fz_sign_error, "signs"),
        (fz_wrong_axis, "shape"),
        (fz_uint8_wraps, "wraps"),
        (fz_without_bias, "add the bias"),
        (fz_out_features_as_k, "in-features"),
    ],
    "check_asym_weight_layers": [
        (awl_per_tensor, "not one per tensor"),
        (awl_sign_reversed, "positive when asymmetric is better"),
        (awl_mse_ratio, "decibels"),
        (awl_returns_one_string, "expected a set"),
    ],
}
