"""The digits CNN with BatchNorm after each convolution, for BatchNorm folding in QAT.

Introduced in ``11_quantization_aware_training.ipynb``. ``DigitsCNNBN`` is ``DigitsCNN`` with a
``BatchNorm2d`` after ``conv1`` and after ``conv2`` (the convolutions lose their biases, which
the BatchNorm's shift replaces). ``digits_cnn_bn()`` loads the trained weights shipped in
``quantcourse/weights/digits_cnn_bn.safetensors``; ``python -m quantcourse.models retrain``
rebuilds them with the same seeded recipe as the plain CNN (``train_digits_cnn_bn``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .models import TRAIN_EPOCHS, TRAIN_SEED, train_digits_cnn

__all__ = ["DigitsCNNBN", "digits_cnn_bn", "train_digits_cnn_bn", "DIGITS_BN_WEIGHTS"]

DIGITS_BN_WEIGHTS = Path(__file__).resolve().parent / "weights" / "digits_cnn_bn.safetensors"


class DigitsCNNBN(nn.Module):
    """``(N, 1, 8, 8)`` images -> conv 1->16 -> BN -> ReLU -> conv 16->32 -> BN -> ReLU ->
    2x2 max pool -> flatten (512) -> linear 512->64 -> ReLU -> linear 64->10 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(32)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, 10)`` for images ``(N, 1, 8, 8)``."""
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def train_digits_cnn_bn(epochs: int = TRAIN_EPOCHS, *, seed: int = TRAIN_SEED,
                        progress: bool = False) -> DigitsCNNBN:
    """Train a ``DigitsCNNBN`` by the plain CNN's recipe (``qc.train_digits_cnn``), seeded."""
    return train_digits_cnn(epochs, seed=seed, progress=progress, model_factory=DigitsCNNBN)


def digits_cnn_bn(path: str | os.PathLike | None = None) -> DigitsCNNBN:
    """The trained BatchNorm digits CNN in eval mode, a fresh copy on every call."""
    from safetensors.torch import load_file

    path = DIGITS_BN_WEIGHTS if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"digits_cnn_bn: no weights at {path}; rebuild them with "
                                "`python -m quantcourse.models retrain`")
    model = DigitsCNNBN()
    state = load_file(str(path), device="cpu")
    expected = model.state_dict()
    wrong = sorted(set(state) ^ set(expected)) or [
        k for k in state if state[k].shape != expected[k].shape]
    if wrong:
        raise ValueError(f"digits_cnn_bn: {path} does not hold DigitsCNNBN's tensors "
                         f"(mismatched: {', '.join(wrong[:4])})")
    model.load_state_dict(state)
    return model.eval()
