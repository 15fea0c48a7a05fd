"""Plausible wrong answers for the checkers of 05_granularity_and_calibration.ipynb."""

import itertools

import torch

import quantcourse as qc

# ----------------------------------------------------------------- check_percentile_range


def percentile_of_x(x, percentile):
    # forgets the absolute value: misses negative outliers
    return torch.quantile(x.flatten(), percentile / 100)


def percentile_in_percent(x, percentile):
    # passes 99.9 where torch.quantile wants 0.999
    return torch.quantile(x.abs().flatten(), percentile)


def percentile_nearest_rank(x, percentile):
    a = x.abs().flatten().sort().values
    k = max(1, min(a.numel(), int(-(-percentile / 100 * a.numel() // 1))))
    return a[k - 1]


def percentile_fraction_of_max(x, percentile):
    return x.abs().max() * percentile / 100


# ----------------------------------------------------------------- check_granularity_budget


def _table(weights, bits, group_sizes, scale_bits=32):
    table = {}
    for name, w in weights.items():
        for o in ("tensor", "channel", *group_sizes):
            kw = {"granularity": o} if isinstance(o, str) else {"granularity": "group", "group_size": o}
            w_hat, qp = qc.quantize_weight(w, bits, **kw)
            table[name, o] = (float((w - w_hat).double().pow(2).sum()),
                              bits * w.numel() + scale_bits * qp.scale.numel(),
                              float(w.double().pow(2).sum()))
    return table


def _search(weights, group_sizes, table, feasible, objective=0):
    best = None
    for combo in itertools.product(("tensor", "channel", *group_sizes), repeat=len(weights)):
        pick = dict(zip(weights, combo, strict=True))
        if feasible(pick):
            err = sum(table[k, o][0] / (table[k, o][2] if objective else 1) for k, o in pick.items())
            if best is None or err < best[0]:
                best = (err, pick)
    return best[1]


def budget_ignores_scale_bits(weights, bits, budget, group_sizes):
    table = _table(weights, bits, group_sizes, scale_bits=0)
    n = sum(w.numel() for w in weights.values())
    return _search(weights, group_sizes, table, lambda p: sum(table[k, o][1] for k, o in p.items()) <= budget * n)


def budget_per_layer(weights, bits, budget, group_sizes):
    # every layer must fit the budget on its own
    table = _table(weights, bits, group_sizes)
    return _search(weights, group_sizes, table,
                   lambda p: all(table[k, o][1] <= budget * weights[k].numel() for k, o in p.items()))


def budget_plain_mean(weights, bits, budget, group_sizes):
    # the mean of the layers' bits per weight, unweighted by their sizes
    table = _table(weights, bits, group_sizes)
    return _search(weights, group_sizes, table, lambda p: sum(
        table[k, o][1] / weights[k].numel() for k, o in p.items()) / len(p) <= budget)


def budget_relative_error(weights, bits, budget, group_sizes):
    table = _table(weights, bits, group_sizes)
    n = sum(w.numel() for w in weights.values())
    return _search(weights, group_sizes, table,
                   lambda p: sum(table[k, o][1] for k, o in p.items()) <= budget * n, objective=1)


def budget_group_without_size(weights, bits, budget, group_sizes):
    return {name: "group" for name in weights}


# ----------------------------------------------------------------- check_flat_group_size


def _kl(model, qmodel, images):
    with torch.no_grad():
        p = torch.log_softmax(model(images).double(), dim=-1)
        q = torch.log_softmax(qmodel(images).double(), dim=-1)
    return float((p.exp() * (p - q)).sum(dim=-1).mean())


def _curve(model, images, bits, sizes):
    return {g: _kl(model, qc.quantize_model_weights(model, bits, granularity="group", group_size=g),
                   images) for g in sizes}


def flat_argmin(model, images, bits, sizes, tolerance):
    curve = _curve(model, images, bits, sizes)
    return min(curve, key=curve.get)


def flat_by_weight_error(model, images, bits, sizes, tolerance):
    err = {}
    for g in sizes:
        qm = qc.quantize_model_weights(model, bits, granularity="group", group_size=g)
        err[g] = sum(float((a - b).detach().double().pow(2).sum())
                     for a, b in zip(model.parameters(), qm.parameters(), strict=True))
    return max(g for g, v in err.items() if v <= (1 + tolerance) * min(err.values()))


def flat_against_first_size(model, images, bits, sizes, tolerance):
    curve = _curve(model, images, bits, sizes)
    return max(g for g, v in curve.items() if v <= (1 + tolerance) * curve[sizes[0]])


WRONG_ANSWERS = {
    "check_percentile_range": [
        (percentile_of_x, "|x|"),
        (percentile_in_percent, "percentile / 100"),
        (percentile_nearest_rank, "interpolate"),
        (percentile_fraction_of_max, "not p % of max|x|"),
    ],
    "check_granularity_budget": [
        (budget_ignores_scale_bits, "32 bits for every float32 scale"),
        (budget_per_layer, "not for each layer"),
        (budget_plain_mean, "number of weights"),
        (budget_relative_error, "relative error"),
        (budget_group_without_size, "a group size from"),
    ],
    "check_flat_group_size": [
        (flat_argmin, "largest (cheapest)"),
        (flat_by_weight_error, "not the weights' error"),
        (flat_against_first_size, "not monotone"),
    ],
}
