"""Data the course runs on: scikit-learn's bundled 8x8 digits and a text corpus shipped here.

Introduced in ``05_granularity_and_calibration.ipynb``.

* ``digits_data()``: the 1797 handwritten digits that ship inside scikit-learn (no download),
  split once and for all (stratified, seed 0, 20 % test: 1437 train, 360 test images) into
  float32 tensors of shape ``(N, 1, 8, 8)`` scaled to ``[0, 1]`` and int64 labels.
* ``corpus()``: a few hundred English sentences written for this course (``corpus.txt`` next
  to this file), with paraphrase pairs so that nearest-neighbour retrieval means something.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import NamedTuple

import numpy as np
import torch

__all__ = ["DigitsData", "digits_data", "corpus", "DIGITS_SEED", "DIGITS_TEST_FRACTION"]

DIGITS_SEED = 0
DIGITS_TEST_FRACTION = 0.2
# scikit-learn stores each pixel as an integer intensity 0..16.
_DIGITS_MAX = 16.0


class DigitsData(NamedTuple):
    """The digits split: images ``(N, 1, 8, 8)`` float32 in ``[0, 1]``, labels ``(N,)`` int64."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images.astype(np.float32) / _DIGITS_MAX).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SEED, stratify=y
    )
    arrays = tuple(np.ascontiguousarray(a) for a in (x_tr, y_tr, x_te, y_te))
    for a in arrays:
        a.setflags(write=False)
    return arrays


def digits_data() -> DigitsData:
    """Deterministic train/test split of scikit-learn's 8x8 digits as tensors.

    Returns ``DigitsData(x_train, y_train, x_test, y_test)`` (a named tuple, so it unpacks):
    1437 training and 360 test images, stratified by label with seed 0. The tensors are
    fresh copies on every call, so changing them in place changes nothing for later callers.
    """
    return DigitsData(*(torch.from_numpy(a.copy()) for a in _digits_arrays()))


@lru_cache(maxsize=1)
def _corpus_lines() -> tuple[str, ...]:
    text = resources.files(__package__).joinpath("corpus.txt").read_text(encoding="utf-8")
    return tuple(
        s for s in (line.strip() for line in text.splitlines()) if s and not s.startswith("#")
    )


def corpus() -> list[str]:
    """The sentences of the course's text corpus, in file order (a fresh list each call).

    ``quantcourse/corpus.txt`` holds one sentence per line; lines starting with ``#`` are
    comments (the licence header and topic headings) and are skipped. The sentences were
    written for this course; several are paraphrases of each other, so a sentence's nearest
    neighbour under a good embedding model is usually its paraphrase.
    """
    return list(_corpus_lines())
