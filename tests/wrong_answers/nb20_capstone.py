"""Plausible wrong answers for the checkers of 20_capstone.ipynb."""

import math

import torch
import torch.nn.functional as F

import quantcourse as qc

# ----------------------------------------------------------------- check_pick_recipe


def pick_strict_budget(table, budget, min_speed):
    # a recipe of exactly `budget` bytes is left out
    ok = [n for n, r in table.items() if r["bytes"] < budget and r["speed"] >= min_speed]
    return min(ok, key=lambda n: (table[n]["loss"], table[n]["bytes"])) if ok else None


def pick_ignores_speed(table, budget, min_speed):
    ok = [n for n, r in table.items() if r["bytes"] <= budget]
    return min(ok, key=lambda n: (table[n]["loss"], table[n]["bytes"])) if ok else None


def pick_smallest(table, budget, min_speed):
    # the smallest recipe that qualifies, whatever its loss
    ok = [n for n, r in table.items() if r["bytes"] <= budget and r["speed"] >= min_speed]
    return min(ok, key=lambda n: (table[n]["bytes"], table[n]["loss"])) if ok else None


def pick_empty_string(table, budget, min_speed):
    ok = [n for n, r in table.items() if r["bytes"] <= budget and r["speed"] >= min_speed]
    return min(ok, key=lambda n: (table[n]["loss"], table[n]["bytes"])) if ok else ""


# ----------------------------------------------------------------- check_nf4_nbytes


def nf4_floor_blocks(numel, block_size, double_quant):
    blocks = numel // block_size
    if double_quant:
        return math.ceil(numel / 2) + blocks + 4 * math.ceil(blocks / 256) + 4
    return math.ceil(numel / 2) + 4 * blocks


def nf4_one_byte_codes(numel, block_size, double_quant):
    blocks = math.ceil(numel / block_size)
    if double_quant:
        return numel + blocks + 4 * math.ceil(blocks / 256) + 4
    return numel + 4 * blocks


def nf4_dq_no_mean(numel, block_size, double_quant):
    blocks = math.ceil(numel / block_size)
    if double_quant:
        return math.ceil(numel / 2) + blocks + 4 * math.ceil(blocks / 256)
    return math.ceil(numel / 2) + 4 * blocks


def nf4_with_qc(numel, block_size, double_quant):
    return qc.nf4_quantize(torch.zeros(numel), block_size=block_size,
                           double_quant=double_quant).nbytes


# ----------------------------------------------------------------- check_recipe_point


def _kl(model, q, images):
    with torch.no_grad():
        p = F.log_softmax(model(images), dim=1)
        r = F.log_softmax(q(images), dim=1)
    return float((p.exp() * (p - r)).sum(dim=1).mean())


def point_parameters_only(model, images, bits, layers):
    # forgets the buffers (BatchNorm's running statistics)
    q = qc.quantize_model_weights(model, dict.fromkeys(layers, bits))
    nbytes = sum(4 * p.numel() for p in model.parameters())
    for name in layers:
        w = model.get_submodule(name).weight
        nbytes += math.ceil(w.numel() * bits / 8) + 4 * w.shape[0] - 4 * w.numel()
    return nbytes, _kl(model, q, images)


def point_all_layers(model, images, bits, layers):
    # quantizes every layer, not only the named ones
    q = qc.quantize_model_weights(model, bits)
    return qc.allocation_nbytes(model, dict.fromkeys(qc.quantizable_layers(model), bits)), \
        _kl(model, q, images)


def point_reversed_kl(model, images, bits, layers):
    q = qc.quantize_model_weights(model, dict.fromkeys(layers, bits))
    return qc.allocation_nbytes(model, dict.fromkeys(layers, bits)), _kl(q, model, images)


def point_in_place(model, images, bits, layers):
    nbytes = qc.allocation_nbytes(model, dict.fromkeys(layers, bits))
    with torch.no_grad():
        p = F.log_softmax(model(images), dim=1)
    qc.quantize_model_weights(model, dict.fromkeys(layers, bits), inplace=True)
    with torch.no_grad():
        r = F.log_softmax(model(images), dim=1)
    return nbytes, float((p.exp() * (p - r)).sum(dim=1).mean())


WRONG_ANSWERS = {
    "check_pick_recipe": [
        (pick_strict_budget, "the budget is inclusive"),
        (pick_ignores_speed, "at least `min_speed` fast"),
        (pick_smallest, "rank by loss first"),
        (pick_empty_string, "return None"),
    ],
    "check_nf4_nbytes": [
        (nf4_floor_blocks, "part-filled last block"),
        (nf4_one_byte_codes, "two 4-bit codes share a byte"),
        (nf4_dq_no_mean, "mean of the block scales"),
        (nf4_with_qc, "without the package"),
    ],
    "check_recipe_point": [
        (point_parameters_only, "BatchNorm's running statistics"),
        (point_all_layers, "only the named layers"),
        (point_reversed_kl, "FROM the float one"),
        (point_in_place, "changed the model's own weights"),
    ],
}
