"""Checkers for the exercises of ``19_sparsity_pruning_distillation.ipynb``."""

from __future__ import annotations

import math

import torch

from ..models import digits_cnn
from ..sparsity import distillation_loss, prune_masks
from ._core import CheckFailed, call, checker, fmt, one_number, passed

# --------------------------------------------------------------------------- relative index width


def _entries(mask: torch.Tensor, k: int) -> int:
    """Stored entries of a relative index of ``k`` bits: kept weights plus fillers."""
    kept = mask.reshape(-1).nonzero().reshape(-1).tolist()
    total, prev = 0, -1
    for p in kept:
        total += 1 + (p - prev - 1) // (2**k)
        prev = p
    return total


def _relative_bits(mask: torch.Tensor, value_bits: int, k: int) -> int:
    e = _entries(mask, k)
    return math.ceil(e * value_bits / 8) + math.ceil(e * k / 8)


def _mask_cases() -> list[tuple[str, torch.Tensor, int]]:
    gen = torch.Generator().manual_seed(18)

    def random_mask(numel: int, density: float) -> torch.Tensor:
        return torch.rand(numel, generator=gen) < density

    cnn = digits_cnn()
    fc1 = prune_masks(cnn, 0.9, layers=("conv2", "fc1", "fc2"))["fc1.weight"]
    clustered = torch.zeros(4000, dtype=torch.bool)
    clustered[:200] = True  # every kept weight at the front, then one long run of zeros
    clustered[3999] = True
    return [
        ("a random mask, half the weights kept, 4-bit values", random_mask(4000, 0.5), 4),
        ("a random mask, 10% kept, 4-bit values", random_mask(4000, 0.1), 4),
        ("a random mask, 2% kept, 8-bit values", random_mask(8000, 0.02), 8),
        ("a random mask, 0.5% kept, 4-bit values", random_mask(20000, 0.005), 4),
        ("the digits CNN's fc1 at 90% global sparsity, 4-bit values", fc1, 4),
        ("200 kept weights, then 3,799 zeros, then one more, 8-bit values", clustered, 8),
    ]


@checker
def check_best_index_bits(answer) -> None:
    """``answer(mask, value_bits)`` -> the relative-index width in 1..8 with the fewest bytes."""
    for label, mask, value_bits in _mask_cases():
        what = f"best index width for {label}"
        got = call(answer, mask.clone(), value_bits, what=what)
        g = float(one_number(got, what))
        sizes = {k: _relative_bits(mask, value_bits, k) for k in range(1, 9)}
        best = min(sizes.values())
        winners = [k for k, v in sizes.items() if v == best]
        if g not in winners:
            table = ", ".join(f"{k} bits: {v} B" for k, v in sizes.items())
            hint = "count, for each width, the stored entries (kept weights plus fillers) times " \
                   "the value and index bits, and take the smallest total"
            if g == 1 or (g.is_integer() and int(g) in sizes and sizes[int(g)] > best
                          and int(g) < min(winners)):
                hint = ("a narrower index is not always smaller: each run of zeros longer than "
                        "2^k - 1 needs a filler entry, which costs a whole value plus an index")
            elif g.is_integer() and int(g) > max(winners):
                hint = ("a wider index than needed wastes bits on every entry; fillers are rare "
                        "once 2^k exceeds most runs of zeros")
            raise CheckFailed(f"{what}: expected {winners[0]} bits ({best} bytes), got "
                              f"{fmt(g)}. Sizes: {table}. Hint: {hint}")
    passed("your index widths give the fewest bytes: sparser masks have longer runs of zeros "
           "and want wider relative indices")


# --------------------------------------------------------------------------- N:M metadata


_NM_CASES = [(1, 2), (2, 4), (1, 4), (4, 8), (2, 8), (3, 4), (4, 4), (1, 16), (8, 16)]


@checker
def check_nm_metadata_bits(answer) -> None:
    """``answer(n, m)`` -> the fewest whole bits that say which n of m weights a group keeps."""
    for n, m in _NM_CASES:
        what = f"metadata bits per group for {n}:{m}"
        got = call(answer, n, m, what=what)
        g = float(one_number(got, what))
        want = math.ceil(math.log2(math.comb(m, n)))
        if g != want:
            hint = "count the possible patterns: C(m, n) of them; one group needs the bits " \
                   "that number them all, ceil(log2 C(m, n))"
            if g == n * math.ceil(math.log2(m)):
                hint = (f"{n} positions of {math.ceil(math.log2(m))} bits each "
                        "store the same pattern more than once (order does not matter): count "
                        "the C(m, n) unordered patterns instead")
            elif g == m:
                hint = "a bitmask of the group works but is not the fewest bits: count the " \
                       "C(m, n) patterns"
            elif not g.is_integer():
                hint = "a group's metadata is a whole number of bits: round log2 C(m, n) up"
            raise CheckFailed(f"{what}: expected {want}, got {fmt(g)}. Hint: {hint}")
    passed("your metadata counts match ceil(log2 C(m, n)): 3 bits for a 2:4 group, "
           "where two 2-bit positions take 4")


# --------------------------------------------------------------------------- distillation gradient


def _grad_cases() -> list[tuple[str, torch.Tensor, torch.Tensor, float]]:
    gen = torch.Generator().manual_seed(180)
    s = torch.randn(6, 10, generator=gen, dtype=torch.float64) * 3
    t = torch.randn(6, 10, generator=gen, dtype=torch.float64) * 3
    return [
        ("a batch of 6, T = 1", s, t, 1.0),
        ("a batch of 6, T = 4", s, t, 4.0),
        ("a batch of 6, T = 10", s * 2, t, 10.0),
        ("one row, T = 2", s[:1], t[:1], 2.0),
    ]


@checker
def check_soft_grad(answer) -> None:
    """``answer(student_logits, teacher_logits, T)`` -> d(soft loss)/d(student logits)."""
    for label, s, t, temp in _grad_cases():
        what = f"gradient of the soft loss for {label}"
        got = call(answer, s.clone(), t.clone(), temp, what=what)
        if not isinstance(got, torch.Tensor):
            raise CheckFailed(f"{what}: expected a tensor shaped {tuple(s.shape)}, got "
                              f"{type(got).__name__}")
        if got.shape != s.shape:
            raise CheckFailed(f"{what}: expected shape {tuple(s.shape)}, got {tuple(got.shape)}")
        leaf = s.clone().requires_grad_(True)
        targets = torch.zeros(s.shape[0], dtype=torch.long)
        distillation_loss(leaf, t, targets, temperature=temp, alpha=1.0).backward()
        want = leaf.grad
        g = got.detach().double()
        if torch.allclose(g, want, rtol=1e-6, atol=1e-9):
            continue
        ratio = float((g * want).sum() / (want * want).sum())
        hint = "the gradient of T^2 KL(p_teacher || p_student) is T (p_student - p_teacher) / N"
        if abs(ratio + 1) < 1e-6:
            hint = "the sign is flipped: the loss falls as the student's soft probabilities " \
                   "move towards the teacher's, so the gradient is p_student - p_teacher"
        elif abs(ratio * temp**2 - 1) < 1e-6 and temp != 1:
            hint = "without the T^2 factor the gradient shrinks as 1/T; the loss multiplies the " \
                   "KL by T^2, so the gradient is T (p_student - p_teacher)"
        elif abs(ratio - temp) < 1e-6 and temp != 1:
            hint = "one factor T too many: T^2 from the loss times 1/T from the inner " \
                   "derivative of s / T leaves T"
        elif abs(ratio - s.shape[0]) < 1e-6 and s.shape[0] != 1:
            hint = "the loss averages over the batch (batchmean): divide by N"
        raise CheckFailed(f"{what}: values differ (first row expected {fmt(want[0])}, got "
                          f"{fmt(g[0])}). Hint: {hint}")
    passed("your gradient matches autograd: T (softmax(s/T) - softmax(t/T)) / N, the same "
           "size at every temperature thanks to the T^2")
