"""Plausible wrong answers for the checkers of 06_bit_widths_and_packing.ipynb."""

import math

import torch

import quantcourse as qc

# ----------------------------------------------------------------- check_pack_3bit


def _groups(codes):
    c = codes.reshape(-1).to(torch.int64)
    return c, torch.cat([c, c.new_zeros(-c.numel() % 8)]).reshape(-1, 8)


def _bytes_of_words(word, n):
    out = torch.stack([(word >> (8 * k)) & 0xFF for k in range(3)], dim=1).reshape(-1)
    return out[: math.ceil(3 * n / 8)].to(torch.uint8)


def p3_padded_to_nibbles(codes):  # option 1 of the notebook: 4 bits per code
    return qc.pack_bits(codes.to(torch.int8), 4)


def p3_not_masked(codes):  # negative codes OR their sign bits into every higher field
    c, g = _groups(codes)
    word = torch.zeros(g.shape[0], dtype=torch.int64)
    for i in range(8):
        word = word | (g[:, i] << (3 * i))
    return _bytes_of_words(word & 0xFFFFFF, c.numel())


def p3_msb_first(codes):  # a big-endian bit stream
    c = codes.reshape(-1).to(torch.int64) & 0b111
    bits = ((c[:, None] >> torch.tensor([2, 1, 0])) & 1).reshape(-1)
    bits = torch.cat([bits, bits.new_zeros(-bits.numel() % 8)]).reshape(-1, 8)
    return (bits << torch.arange(7, -1, -1)).sum(dim=1).to(torch.uint8)


def p3_whole_groups(codes):  # keeps the padding of the last group of 8
    c, g = _groups(codes)
    word = ((g & 0b111) << (3 * torch.arange(8))).sum(dim=1)
    return torch.stack([(word >> (8 * k)) & 0xFF for k in range(3)], dim=1).reshape(-1).to(
        torch.uint8)


def p3_float_bytes(codes):
    c, g = _groups(codes)
    word = ((g & 0b111) << (3 * torch.arange(8))).sum(dim=1)
    return _bytes_of_words(word, c.numel()).float()


# ----------------------------------------------------------------- check_storage_bytes


def _n_scales(rows, cols, group_size):
    return rows if group_size is None else rows * (cols // group_size)


def storage_without_scales(rows, cols, bits, group_size=None):
    return math.ceil(rows * cols * bits / 8)


def storage_rounds_down(rows, cols, bits, group_size=None):
    return rows * cols * bits // 8 + 4 * _n_scales(rows, cols, group_size)


def storage_fp16_scales(rows, cols, bits, group_size=None):
    return math.ceil(rows * cols * bits / 8) + 2 * _n_scales(rows, cols, group_size)


def storage_one_scale(rows, cols, bits, group_size=None):
    return math.ceil(rows * cols * bits / 8) + 4


def storage_bits_not_bytes(rows, cols, bits, group_size=None):
    return rows * cols * bits + 4 * _n_scales(rows, cols, group_size)


def storage_one_scale_per_row_always(rows, cols, bits, group_size=None):
    return math.ceil(rows * cols * bits / 8) + 4 * rows


# ----------------------------------------------------------------- check_smallest_bits


def _agreements(model, images, *, labels=None, granularity="channel"):
    with torch.no_grad():
        ref = model(images).argmax(dim=1) if labels is None else labels
        for bits in range(2, 9):
            q = qc.quantize_model_weights(model, bits, granularity=granularity)
            yield bits, float((q(images).argmax(dim=1) == ref).double().mean())


def sb_against_labels(model, images, threshold):  # accuracy, not agreement
    labels = qc.digits_data().y_test
    return next((b for b, a in _agreements(model, images, labels=labels) if a >= threshold), None)


def sb_per_tensor(model, images, threshold):
    return next((b for b, a in _agreements(model, images, granularity="tensor")
                 if a >= threshold), None)


def sb_strictly_above(model, images, threshold):
    return next((b for b, a in _agreements(model, images) if a > threshold), None)


def sb_returns_agreement(model, images, threshold):
    return next((a for b, a in _agreements(model, images) if a >= threshold), None)


WRONG_ANSWERS = {
    "check_pack_3bit": [
        (p3_padded_to_nibbles, "3 bits per code"),
        (p3_not_masked, "mask each code"),
        (p3_msb_first, "lowest bits first"),
        (p3_whole_groups, "trim the padding"),
        (p3_float_bytes, "integer tensor"),
    ],
    "check_storage_bytes": [
        (storage_without_scales, "add the scales"),
        (storage_rounds_down, "round the packed bytes up"),
        (storage_fp16_scales, "4 bytes, not 2"),
        (storage_one_scale, "not one per tensor"),
        (storage_bits_not_bytes, "divide by 8"),
        (storage_one_scale_per_row_always, "scales per row"),
    ],
    "check_smallest_bits": [
        (sb_against_labels, "not against the labels"),
        (sb_per_tensor, "not per tensor"),
        (sb_strictly_above, ">="),
        (sb_returns_agreement, "bit width"),
    ],
}
