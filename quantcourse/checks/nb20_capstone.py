"""Checkers for the exercises of ``20_capstone.ipynb``."""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F
from torch import nn

from ..data import digits_data
from ..mixed import allocation_nbytes
from ..models_bn import digits_cnn_bn
from ..nn import quantize_model_weights
from ..nonuniform import nf4_quantize
from ._core import (
    CheckFailed,
    call,
    checker,
    fmt_pair,
    hint_for,
    one_number,
    passed,
    without_package,
)

# --------------------------------------------------------------------------- pick a recipe


def _pick_reference(table, budget, min_speed):
    ok = [n for n, r in table.items() if r["bytes"] <= budget and r["speed"] >= min_speed]
    if not ok:
        return None
    return min(ok, key=lambda n: (table[n]["loss"], table[n]["bytes"], n))


def _tables():
    """Recipe tables like the notebook's: a fixed one with edge cases, then random ones."""
    fixed = {
        "RTN ch4": {"bytes": 5_391_360, "loss": 0.078, "speed": 0.93},
        "GPTQ g128 4": {"bytes": 5_640_192, "loss": 0.046, "speed": 0.69},
        "mixed": {"bytes": 5_935_104, "loss": 0.033, "speed": 0.79},
        "NF4 b64": {"bytes": 5_971_968, "loss": 0.025, "speed": 1.0},
        "W8A8": {"bytes": 10_700_000, "loss": 0.0026, "speed": 2.2},
        "RTN g128 3": {"bytes": 4_313_088, "loss": 0.23, "speed": 0.93},
        "twin": {"bytes": 5_000_000, "loss": 0.078, "speed": 0.93},
    }
    cases = [
        (fixed, 5_971_968, 0.0, "a budget equal to a recipe's bytes"),
        (fixed, 5_971_967, 0.0, "a budget one byte below NF4's size"),
        (fixed, 6_000_000, 0.93, "a speed floor equal to some recipes' speed"),
        (fixed, 5_391_360, 0.0, "two recipes with the same loss"),
        (fixed, 4_000_000, 0.0, "a budget nothing fits"),
        (fixed, 20_000_000, 5.0, "a speed floor nothing reaches"),
    ]
    rng = random.Random(19)
    for k in range(30):
        table = {f"r{i}": {"bytes": rng.randrange(1_000, 10_000),
                           "loss": round(rng.uniform(0, 1), 2),
                           "speed": round(rng.uniform(0.5, 2.0), 1)} for i in range(8)}
        cases.append((table, rng.randrange(1_000, 10_000), round(rng.uniform(0.4, 1.6), 1),
                      f"random table {k}"))
    return cases


@checker
def check_pick_recipe(answer) -> None:
    """``answer(table, budget, min_speed)`` -> the recipe name the stated criterion picks."""
    for table, budget, min_speed, label in _tables():
        what = f"pick_recipe on {label} (budget {budget:,} B, min_speed {min_speed})"
        snapshot = {n: dict(r) for n, r in table.items()}
        got = call(answer, table, budget, min_speed, what=what)
        if table != snapshot:
            raise CheckFailed(f"{what}: your function changed the table; leave it as it is")
        want = _pick_reference(table, budget, min_speed)
        if got == want:
            continue
        mistakes = _pick_mistakes(table, budget, min_speed)
        hint = next((h for h, v in mistakes if v == got and v != want), "")
        if want is None:
            hint = hint or "when no recipe qualifies, return None"
        raise CheckFailed(f"{what}: expected {want!r}, got {got!r}"
                          + (f". Hint: {hint}" if hint else ""))
    passed("your choice follows the criterion on 36 tables, edge cases included "
           "(inclusive budget and speed floor, ties, nothing qualifying)")


def _pick_mistakes(table, budget, min_speed):
    def ok(r):
        return r["bytes"] <= budget and r["speed"] >= min_speed

    return [
        ("the budget is inclusive: a recipe of exactly `budget` bytes fits",
         _pick_loose(table, budget, min_speed, strict_bytes=True)),
        ("the speed floor is inclusive: a speed equal to `min_speed` qualifies",
         _pick_loose(table, budget, min_speed, strict_speed=True)),
        ("a recipe must also be at least `min_speed` fast",
         _pick_loose(table, budget, 0.0)),
        ("rank by loss first; bytes only break ties",
         min((n for n, r in table.items() if ok(r)),
             key=lambda n: (table[n]["bytes"], table[n]["loss"]), default=None)),
        ("lower loss is better: pick the least loss, not the most",
         max((n for n, r in table.items() if ok(r)),
             key=lambda n: (table[n]["loss"], -table[n]["bytes"]), default=None)),
        ("on equal loss the smaller recipe wins",
         min((n for n, r in table.items() if ok(r)),
             key=lambda n: (table[n]["loss"], -table[n]["bytes"]), default=None)),
    ]


def _pick_loose(table, budget, min_speed, *, strict_bytes=False, strict_speed=False):
    ok = [n for n, r in table.items()
          if (r["bytes"] < budget if strict_bytes else r["bytes"] <= budget)
          and (r["speed"] > min_speed if strict_speed else r["speed"] >= min_speed)]
    return min(ok, key=lambda n: (table[n]["loss"], table[n]["bytes"], n)) if ok else None


# --------------------------------------------------------------------------- NF4 bytes

_NF4_CASES = ((4096, 64, False), (1000, 64, False), (1000, 64, True), (64 * 256, 64, True),
              (64 * 257, 64, True), (70_001, 64, True), (100, 16, False), (1, 4096, True),
              (384 * 1536, 64, True), (5000, 128, True))


@checker
def check_nf4_nbytes(answer) -> None:
    """``answer(numel, block_size, double_quant)`` -> bytes of ``nf4_quantize``'s result."""
    g = torch.Generator().manual_seed(7)
    for numel, bs, dq in _NF4_CASES:
        what = f"NF4 bytes of {numel:,} weights, blocks of {bs}, double_quant={dq}"
        with without_package(what):
            got = float(one_number(call(answer, numel, bs, dq, what=what), what))
        want = nf4_quantize(torch.randn(numel, generator=g), block_size=bs,
                            double_quant=dq).nbytes
        if got == want:
            continue
        blocks = math.ceil(numel / bs)
        codes = math.ceil(numel / 2)
        steps = math.ceil(blocks / 256)
        mistakes = [
            ("a part-filled last block still has its scale: count ceil(numel / block_size) "
             "blocks", (codes + (numel // bs) * (1 if dq else 4)
                        + (4 * math.ceil((numel // bs) / 256) + 4 if dq else 0))),
            ("two 4-bit codes share a byte",
             numel + (blocks + 4 * steps + 4 if dq else 4 * blocks)),
            ("double quantization stores each block scale in 1 byte, not 4",
             codes + 4 * blocks + 4 * steps + 4 if dq else None),
            ("double quantization also stores one float32 step per 256 blocks and the "
             "float32 mean", codes + blocks if dq else None),
            ("and the float32 mean of the block scales (4 bytes)",
             codes + blocks + 4 * steps if dq else None),
            ("one float32 step per 256 block scales: ceil(blocks / 256) steps",
             codes + blocks + 4 * (blocks // 256) + 4 if dq else None),
            ("the codes padded to whole blocks: the zero padding of the last block is "
             "not stored", math.ceil(blocks * bs / 2) + (blocks + 4 * steps + 4 if dq
                                                         else 4 * blocks)),
        ]
        g_txt, w_txt = fmt_pair(got, want)
        hint = hint_for(got, mistakes, want=want)
        raise CheckFailed(f"{what}: expected {w_txt} bytes, got {g_txt}"
                          + (f". Hint: {hint}" if hint else ""))
    passed("your byte counts match qc.nf4_quantize(...).nbytes, with and without double "
           "quantization, partial blocks included")


# --------------------------------------------------------------------------- recipe point


def _point_reference(model, images, bits, layers):
    q = quantize_model_weights(model, dict.fromkeys(layers, bits))
    with torch.no_grad():
        p = F.log_softmax(model(images), dim=1)
        r = F.log_softmax(q(images), dim=1)
    kl = float((p.exp() * (p - r)).sum(dim=1).mean())
    return allocation_nbytes(model, dict.fromkeys(layers, bits)), kl


def _mlp():
    torch.manual_seed(19)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10)).eval()


@checker
def check_recipe_point(answer) -> None:
    """``answer(model, images, bits, layers)`` -> (bytes, KL) of RTN on the named layers."""
    x = digits_data().x_test
    cases = [(digits_cnn_bn, "the digits CNN with BatchNorm", 3, ["conv1", "conv2", "fc1", "fc2"]),
             (digits_cnn_bn, "the digits CNN with BatchNorm", 4, ["conv2", "fc1"]),
             (_mlp, "a small MLP", 2, ["3"]),
             (_mlp, "a small MLP", 6, ["1", "3"])]
    for make, label, bits, layers in cases:
        model = make()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        what = f"{label}, {bits} bits on {layers}"
        got = call(answer, model, x, bits, list(layers), what=what)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise CheckFailed(f"{what}: expected a pair (bytes, kl), got {type(got).__name__}")
        if any(not torch.equal(v, model.state_dict()[k]) for k, v in before.items()):
            raise CheckFailed(f"{what}: your function changed the model's own weights; "
                              "quantize a copy (qc.quantize_model_weights returns one)")
        nbytes = float(one_number(got[0], what + ": bytes"))
        kl = float(one_number(got[1], what + ": KL"))
        want_bytes, want_kl = _point_reference(model, x, bits, layers)
        if nbytes != want_bytes:
            all_layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d,
                                                                               nn.Linear))]
            params = sum(4 * p.numel() for p in model.parameters())
            mistakes = [
                ("count every parameter AND buffer: BatchNorm's running statistics are stored "
                 "too", want_bytes - sum(b.numel() * b.element_size() for b in model.buffers())),
                ("only the named layers are quantized; the others stay float32",
                 allocation_nbytes(model, dict.fromkeys(all_layers, bits))),
                ("the quantized layers store codes and scales, not float32 weights",
                 params + sum(b.numel() * b.element_size() for b in model.buffers())),
            ]
            hint = hint_for(nbytes, mistakes, want=want_bytes,
                            default="codes packed at `bits` plus a float32 scale per output "
                                    "channel, everything else at its stored size")
            raise CheckFailed(f"{what}: expected {want_bytes:,} bytes, got {nbytes:,.0f}. "
                              f"Hint: {hint}")
        if not math.isclose(kl, want_kl, rel_tol=1e-4, abs_tol=1e-9):
            g_txt, w_txt = fmt_pair(kl, want_kl)
            raise CheckFailed(
                f"{what}: expected KL {w_txt}, got {g_txt}. Hint: the KL of the quantized "
                "model's distribution FROM the float one, sum p_float * (log p_float - "
                "log p_quant) over classes, averaged over the images (eval mode, no gradients)")
    passed("your pipeline gives the right bytes and KL on a BatchNorm CNN and an MLP, "
           "for layer subsets and for all layers")
