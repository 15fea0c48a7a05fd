"""Plausible wrong answers for the checkers of 12_mixed_precision.ipynb."""

import math

import quantcourse as qc

# ----------------------------------------------------------------- check_layer_bytes


def bytes_no_scales(layer, fmt):
    n = layer.weight.numel()
    return 2 * n if isinstance(fmt, str) else math.ceil(n * fmt / 8)


def bytes_padded_rows(layer, fmt):
    w = layer.weight
    if isinstance(fmt, str):
        return 2 * w.numel()
    return w.shape[0] * (math.ceil(w[0].numel() * fmt / 8) + 4)


def bytes_fp16_as_four(layer, fmt):
    n = layer.weight.numel()
    return 4 * n if isinstance(fmt, str) else math.ceil(n * fmt / 8) + 4 * layer.weight.shape[0]


def bytes_scales_per_input(layer, fmt):
    w = layer.weight
    return 2 * w.numel() if isinstance(fmt, str) else math.ceil(w.numel() * fmt / 8) + 4 * w.shape[1]


# ----------------------------------------------------------------- check_greedy_allocation


def _start(sens, sizes):
    return {n: min(sizes[n], key=lambda f: (sizes[n][f], sens[n][f])) for n in sens}


def greedy_by_gain(sens, sizes, budget):
    # ranks upgrades by the drop saved, ignoring what they cost
    alloc = _start(sens, sizes)
    used = sum(sizes[n][f] for n, f in alloc.items())
    while True:
        best, top = None, 0.0
        for n, cur in alloc.items():
            for f in sens[n]:
                extra, gain = sizes[n][f] - sizes[n][cur], sens[n][cur] - sens[n][f]
                if extra > 0 and gain > top and used + extra <= budget:
                    best, top = (n, f, extra), gain
        if best is None:
            return alloc
        alloc[best[0]] = best[1]
        used += best[2]


def greedy_one_pass(sens, sizes, budget):
    # stops after the first upgrade
    alloc = _start(sens, sizes)
    used = sum(sizes[n][f] for n, f in alloc.items())
    best, rate = None, 0.0
    for n, cur in alloc.items():
        for f in sens[n]:
            extra, gain = sizes[n][f] - sizes[n][cur], sens[n][cur] - sens[n][f]
            if extra > 0 and gain > 0 and used + extra <= budget and gain / extra > rate:
                best, rate = (n, f), gain / extra
    if best is not None:
        alloc[best[0]] = best[1]
    return alloc


def greedy_ignores_budget(sens, sizes, budget):
    # every layer at its least lossy format, whatever it costs
    return {n: min(sens[n], key=sens[n].get) for n in sens}


# ----------------------------------------------------------------- check_allocation_with_floor


def floor_ignored(sens, sizes, budget, pinned):
    return qc.allocate_bits(sens, sizes, budget)


def floor_integers_only(sens, sizes, budget, pinned):
    restricted = {n: ({f: d for f, d in v.items() if isinstance(f, int) and f >= 8}
                      if n in pinned else v) for n, v in sens.items()}
    return qc.allocate_bits(restricted, sizes, budget)


def floor_on_every_layer(sens, sizes, budget, pinned):
    restricted = {n: {f: d for f, d in v.items() if isinstance(f, str) or f >= 8}
                  for n, v in sens.items()}
    return qc.allocate_bits(restricted, sizes, budget)


def floor_swallows_errors(sens, sizes, budget, pinned):
    restricted = {n: ({f: d for f, d in v.items() if isinstance(f, str) or f >= 8}
                      if n in pinned else v) for n, v in sens.items()}
    try:
        return qc.allocate_bits(restricted, sizes, budget)
    except ValueError:
        return qc.allocate_bits(sens, sizes, budget)


WRONG_ANSWERS = {
    "check_layer_bytes": [
        (bytes_no_scales, "scale"),
        (bytes_padded_rows, "no padding between channels"),
        (bytes_fp16_as_four, "2 bytes a weight"),
        (bytes_scales_per_input, "per OUTPUT channel"),
    ],
    "check_greedy_allocation": [
        (greedy_by_gain, "PER EXTRA BYTE"),
        (greedy_one_pass, "should end at"),
        (greedy_ignores_budget, "exceeds the budget"),
    ],
    "check_allocation_with_floor": [
        (floor_ignored, "pinned layer"),
        (floor_integers_only, "16-bit float"),
        (floor_on_every_layer, "only the pinned layers"),
        (floor_swallows_errors, "expected a ValueError"),
    ],
}
