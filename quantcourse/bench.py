"""Measure this machine: ``python -m quantcourse.bench [kernels]``.

Writes ``build/bench/results.json`` (one record per measurement: ``case``, ``device``,
``shape``, ``batch``, ``seconds``, ``baseline``, ``baseline_seconds``, ``ratio`` = baseline
time over case time, plus ``gb_per_s``), ``results.md`` (a table) and PNG plots. Every figure
is the median of repeated runs after a warm-up, compared with a baseline measured in the
same run, with the machine named. Notebook 14 reads these tables; no test times anything.

Suites:
  kernels   per-tensor parameters + quantize of a 64 MiB float32 tensor against a plain copy,
            the naive ``abs().max()`` chain and PyTorch's fused (deprecated) quantize op.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from .affine import asymmetric_qparams, dequantize, quantize, symmetric_qparams
from .env import environment_report

__all__ = ["time_median", "time_paired", "bench_kernels", "main"]


def time_median(fn: Callable[[], object], *, repeat: int = 15, warmup: int = 3,
                device: str = "cpu") -> float:
    """Median wall time of ``fn()`` in seconds, synchronising CUDA around each call."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _record(case, device, shape, seconds, baseline, baseline_seconds, nbytes, batch=None):
    return {
        "case": case,
        "device": device,
        "shape": list(shape),
        "batch": batch,
        "seconds": seconds,
        "baseline": baseline,
        "baseline_seconds": baseline_seconds,
        "ratio": baseline_seconds / seconds,
        "gb_per_s": nbytes / seconds / 1e9,
    }


def _naive_chain(x: torch.Tensor) -> torch.Tensor:
    scale = x.abs().max() / 127
    return torch.clamp(torch.round(x / scale), -127, 127).to(torch.int8)


def _torch_fused(x: torch.Tensor):
    """aminmax plus PyTorch's fused quantize op, or None where the op is gone."""
    fused = getattr(torch, "quantize_per_tensor", None)
    if fused is None:
        return None

    def run():
        mn, mx = torch.aminmax(x)
        scale = float(torch.maximum(-mn, mx)) / 127.5
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fused(x, max(scale, 1e-12), 0, torch.qint8)

    try:
        run()
    except (RuntimeError, NotImplementedError):
        return None
    return run


def _compiled_quantize(x: torch.Tensor):
    """The same per-tensor formula fused by ``torch.compile`` (or None where it cannot compile).

    Returns ``(fn, compile_seconds)``. Shows what one fused pass buys over eager ops; the
    course's kernels stay eager so nothing waits for a compiler.
    """

    def formula(t, inv, lo: int, hi: int):
        return torch.clamp(torch.round(t * inv), lo, hi).to(torch.int8)

    try:
        compiled = torch.compile(formula, dynamic=False)
        start = time.perf_counter()
        qp = symmetric_qparams(x)
        compiled(x, torch.reciprocal(qp.scale), qp.qmin, qp.qmax)
        seconds = time.perf_counter() - start
    except Exception:  # no C++ compiler, unsupported platform: skip this case
        return None, None

    def run():
        qp = symmetric_qparams(x)
        return compiled(x, torch.reciprocal(qp.scale), qp.qmin, qp.qmax)

    return run, seconds


def time_paired(fn: Callable[[], object], baseline: Callable[[], object], *, repeat: int = 15,
                warmup: int = 3, device: str = "cpu") -> tuple[float, float]:
    """Median times of ``fn`` and ``baseline``, run alternately so drift hits both alike."""
    pairs = [(time_median(fn, repeat=1, warmup=warmup if i == 0 else 0, device=device),
              time_median(baseline, repeat=1, warmup=warmup if i == 0 else 0, device=device))
             for i in range(repeat)]
    return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)


def bench_kernels(
    device: str = "cpu", mib: int = 64, repeat: int = 15, progress=None, compile_: bool = True
) -> list[dict]:
    """Per-tensor parameters + quantize of a ``mib`` MiB float32 tensor against baselines.

    Quantizing allocates a 1-byte-per-element result, so its baseline is the stricter copy
    into a preallocated float32 tensor; dequantizing allocates a float32 result, so its
    baseline is ``clone`` (a copy that allocates the same 4 bytes per element).
    """
    torch.manual_seed(0)
    x = torch.randn(mib * 2**20 // 4, device=device)
    nbytes = x.numel() * x.element_size()
    dst = torch.empty_like(x)
    qp = symmetric_qparams(x)
    q = quantize(x, qp)
    baselines = {"copy": lambda: dst.copy_(x), "clone": lambda: x.clone()}
    cases: list[tuple[str, Callable, str]] = [
        ("clone (allocates its output)", baselines["clone"], "copy"),
        ("qc symmetric int8: qparams + quantize",
         lambda: quantize(x, symmetric_qparams(x)), "copy"),
        ("qc asymmetric uint8: qparams + quantize",
         lambda: quantize(x, asymmetric_qparams(x)), "copy"),
        ("qc dequantize int8", lambda: dequantize(q, qp), "clone"),
        ("naive chain: abs().max(), divide, round, clamp", lambda: _naive_chain(x), "copy"),
    ]
    fused = _torch_fused(x) if device == "cpu" else None
    if fused is not None:
        cases.insert(1, ("torch aminmax + quantize_per_tensor (fused, deprecated)", fused, "copy"))
    if compile_:
        if progress:
            progress("torch.compile (compiling)")
        compiled, compile_s = _compiled_quantize(x)
        if compiled is not None:
            cases.append(("qc qparams + torch.compile'd quantize formula", compiled, "copy"))
    records = []
    fused_s = None
    for name, fn, base in cases:
        if progress:
            progress(name)
        seconds, base_s = time_paired(fn, baselines[base], repeat=repeat, device=device)
        rec = _record(name, device, tuple(x.shape), seconds, base, base_s, nbytes)
        if name.startswith("torch aminmax"):
            fused_s = seconds
        if fused_s is not None and name.startswith("qc") and "dequantize" not in name:
            rec["ratio_to_torch_fused"] = fused_s / seconds
        if "torch.compile" in name:
            rec["compile_seconds"] = compile_s
        records.append(rec)
    return records


def _markdown(records: list[dict], machine: str) -> str:
    lines = [
        f"Machine: {machine}",
        "",
        "Ratio: baseline time over case time, both measured alternately in this run; "
        "GB/s: float32 bytes of the tensor over the case time.",
        "",
        "| case | device | seconds | GB/s | baseline | baseline seconds | ratio to baseline "
        "| ratio to torch fused |",
        "|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in records:
        fused = r.get("ratio_to_torch_fused")
        lines.append(
            f"| {r['case']} | {r['device']} | {r['seconds'] * 1e3:.2f} ms | {r['gb_per_s']:.1f} | "
            f"{r['baseline']} | {r['baseline_seconds'] * 1e3:.2f} ms | {r['ratio']:.2f} | "
            f"{'' if fused is None else f'{fused:.2f}'} |"
        )
    return "\n".join(lines) + "\n"


def _plot(records: list[dict], path: Path, machine: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.45 * len(records) + 1.2))
    names = [r["case"] for r in records]
    ax.barh(names, [r["gb_per_s"] for r in records], color="tab:blue")
    ax.invert_yaxis()
    ax.set_xlabel("GB/s of float32 input (higher is better)")
    ax.set_title(f"64 MiB tensor, {machine}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Measure quantcourse kernels on this machine.")
    parser.add_argument("suite", nargs="?", default="all", choices=["all", "kernels"])
    parser.add_argument("--out", type=Path, default=Path("build/bench"))
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--no-compile", action="store_true",
                        help="skip the torch.compile case (it compiles for about 20 s)")
    args = parser.parse_args(argv)

    from tqdm import tqdm

    env = environment_report()
    machine = f"{env['cpu']}, {env['cpu_cores']} cores, {env['torch_threads']} torch threads, " \
              f"torch {env['torch']}"
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    records: list[dict] = []
    with tqdm(total=len(devices), desc="kernels", unit="device") as bar:
        for device in devices:
            records += bench_kernels(device, args.mib, args.repeat,
                                     progress=lambda name: bar.set_postfix_str(name[:40]),
                                     compile_=not args.no_compile)
            bar.update()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(
        {"machine": machine, "environment": env, "records": records}, indent=2))
    table = _markdown(records, machine)
    (args.out / "results.md").write_text(table)
    _plot(records, args.out / "kernels.png", machine)
    print(table)
    for r in records:
        if r["case"].startswith("qc symmetric"):
            print(f"qparams + quantize reach {r['ratio']:.2f}x the throughput of a plain copy"
                  f" on {r['device']} (target: at least 0.5x)")
        if "compile_seconds" in r:
            print(f"fused by torch.compile: {r['ratio']:.2f}x of copy after "
                  f"{r['compile_seconds']:.0f} s of compilation")
    print(f"wrote {args.out}/results.json, results.md, kernels.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
