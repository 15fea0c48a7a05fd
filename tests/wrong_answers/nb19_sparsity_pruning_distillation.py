"""Plausible wrong answers for the checkers of 19_sparsity_pruning_distillation.ipynb."""

import math

import torch

# ----------------------------------------------------------------- check_best_index_bits


def index_always_four(mask, value_bits):
    return 4  # Deep Compression's width for fully connected layers, whatever the mask


def index_ignores_fillers(mask, value_bits):
    # without fillers every width stores the same entries, so the narrowest looks best
    return 1


def index_covers_longest_run(mask, value_bits):
    # wide enough that no run ever needs a filler: wastes bits on every entry
    kept = mask.reshape(-1).nonzero().reshape(-1)
    prev = torch.cat([torch.tensor([-1]), kept[:-1]])
    longest = int((kept - prev - 1).max())
    return min(8, max(1, math.ceil(math.log2(longest + 1))))


# ----------------------------------------------------------------- check_nm_metadata_bits


def nm_positions_one_by_one(n, m):
    return n * math.ceil(math.log2(m))


def nm_bitmask(n, m):
    return m


def nm_no_ceiling(n, m):
    return math.log2(math.comb(m, n))


# ----------------------------------------------------------------- check_soft_grad


def _p(logits, t):
    return torch.softmax(logits / t, dim=1)


def grad_sign_flipped(s, t, temp):
    return temp * (_p(t, temp) - _p(s, temp)) / s.shape[0]


def grad_forgets_t_squared(s, t, temp):
    return (_p(s, temp) - _p(t, temp)) / (temp * s.shape[0])


def grad_t_squared(s, t, temp):
    return temp**2 * (_p(s, temp) - _p(t, temp)) / s.shape[0]


def grad_no_batch_mean(s, t, temp):
    return temp * (_p(s, temp) - _p(t, temp))


WRONG_ANSWERS = {
    "check_best_index_bits": [
        (index_always_four, "expected"),
        (index_ignores_fillers, "filler"),
        (index_covers_longest_run, "wider index than needed"),
    ],
    "check_nm_metadata_bits": [
        (nm_positions_one_by_one, "unordered patterns"),
        (nm_bitmask, "bitmask of the group"),
        (nm_no_ceiling, "round log2 C(m, n) up"),
    ],
    "check_soft_grad": [
        (grad_sign_flipped, "sign is flipped"),
        (grad_forgets_t_squared, "without the T^2 factor"),
        (grad_t_squared, "one factor T too many"),
        (grad_no_batch_mean, "divide by N"),
    ],
}
