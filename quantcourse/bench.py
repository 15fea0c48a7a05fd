"""Measure this machine: ``python -m quantcourse.bench [all | kernels gemm linear minilm]``.

Writes ``build/bench/results.json`` (one record per measurement: ``case``, ``device``,
``shape``, ``batch``, ``seconds``, ``baseline``, ``baseline_seconds``, ``ratio`` = baseline
time over case time, plus ``gb_per_s``), ``results.md`` (a table) and PNG plots. Every figure
is the median of repeated runs after a warm-up, compared with a baseline measured in the
same run, with the machine named. Notebook 14 measures a smaller set in place with the same
timing helpers and points here for the full tables; no test times anything.

Suites (``all`` runs every one; about 3 minutes on 2 CPU cores):
  kernels   per-tensor parameters + quantize of a 64 MiB float32 tensor against a plain copy,
            the naive ``abs().max()`` chain and PyTorch's fused (deprecated) quantize op.
  gemm      ``int8_matmul`` against a float32 matmul (CPU) or bfloat16 ``torch.mm`` (GPU).
  linear    W8A8 (its int8 path and activation grid named per row), PyTorch's fbgemm dynamic
            int8 (CPU; the W8A8 row's last column is fbgemm's time over W8A8's), W8A16 and
            W4A16 linear layers against float32 ``nn.Linear`` (CPU) or bfloat16 (GPU), batch
            1 to 512, several shapes.
  minilm    all-MiniLM-L6-v2 encoding the course corpus, float32 against int8 linear layers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .affine import asymmetric_qparams, dequantize, quantize, symmetric_qparams
from .env import environment_report
from .hessian import gptq, gptq_hessian
from .kernels import int8_matmul, int8_matmul_path
from .qlinear import FbgemmDynamicLinear, W8A8Linear, quantized_linear_types
from .timing import time_median, time_paired

__all__ = [
    "time_median", "time_paired", "bench_kernels", "bench_gemm", "bench_linear", "bench_minilm",
]


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


def bench_kernels(
    device: str = "cpu", mib: int = 64, repeat: int = 15, progress=None, compile_: bool = False
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
    records = []
    fused_s = None
    for name, fn, base in cases + [("torch.compile", None, "copy")] * compile_:
        if fn is None:
            # Compiled last: inductor's own OpenMP threads keep spinning after it runs and
            # would slow every eager case timed after them.
            if progress:
                progress("torch.compile (compiling)")
            fn, compile_s = _compiled_quantize(x)
            if fn is None:
                continue
            name = "qc qparams + torch.compile'd quantize formula"
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


def _gemm_record(case, device, shape, batch, seconds, baseline, baseline_seconds):
    m, k, n = shape
    rec = _record(case, device, shape, seconds, baseline, baseline_seconds, 0, batch=batch)
    del rec["gb_per_s"]
    rec["gflop_per_s"] = 2 * m * k * n / seconds / 1e9
    return rec


def bench_gemm(device: str = "cpu", shapes=((1, 4096, 4096), (512, 4096, 4096)),
               repeat: int = 7, progress=None) -> list[dict]:
    """``int8_matmul`` (M,K)x(K,N) against float32 (CPU) or bfloat16 (GPU) ``torch.mm``."""
    gen = torch.Generator().manual_seed(0)
    float_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    records = []
    for m, k, n in shapes:
        if progress:
            progress(f"gemm {m}x{k}x{n}")
        a = torch.randint(-128, 128, (m, k), dtype=torch.int8, generator=gen).to(device)
        b = torch.randint(-128, 128, (k, n), dtype=torch.int8, generator=gen).to(device)
        fa, fb = a.to(float_dtype), b.to(float_dtype)
        seconds, base_s = time_paired(lambda a=a, b=b: int8_matmul(a, b),
                                      lambda fa=fa, fb=fb: torch.mm(fa, fb),
                                      repeat=repeat, device=device)
        case = f"int8_matmul ({int8_matmul_path(device)})"
        base = f"{str(float_dtype).replace('torch.', '')} torch.mm"
        records.append(_gemm_record(case, device, (m, k, n), m, seconds, base, base_s))
    return records


def bench_gptq(device: str = "cpu", shape=(4096, 4096), rows: int = 2048, bits: int = 4,
               group_size: int | None = 128, repeat: int = 1, progress=None) -> list[dict]:
    """``qc.gptq`` on one (out, in) layer against round-to-nearest on the same grid.

    The Hessian ``2 X^T X`` of ``rows`` random calibration inputs is built once, outside the
    timing; both cases quantize the same weight. GPTQ is a one-off offline cost, so its ratio
    is far below 1: the record says how many seconds a large layer takes here.
    """
    gen = torch.Generator().manual_seed(0)
    n_out, n_in = shape
    w = (torch.randn(n_out, n_in, generator=gen) * 0.02).to(device)
    if progress:
        progress(f"gptq {n_out}x{n_in} hessian")
    h = gptq_hessian(torch.randn(rows, n_in, generator=gen).to(device))
    axis = None if group_size else 0

    def rtn():
        qp = symmetric_qparams(w, bits, axis=axis, group_size=group_size)
        return dequantize(quantize(w, qp), qp)

    if progress:
        progress(f"gptq {n_out}x{n_in}")
    seconds, base_s = time_paired(lambda: gptq(w, h, bits, group_size=group_size), rtn,
                                  repeat=repeat, warmup=0, device=device)
    grid = f"{bits}-bit, " + (f"groups of {group_size}" if group_size else "per channel")
    rec = _record(f"qc.gptq ({grid})", device, shape, seconds, f"round-to-nearest ({grid})",
                  base_s, 0)
    del rec["gb_per_s"]
    return [rec]


def _linear_cases(device: str):
    return [(name, cls) for name, cls in quantized_linear_types(device).items()]


def _layer_label(name: str, cls: type, layer: nn.Module) -> str:
    """The row's name: class, description, and for W8A8 its int8 path and activation grid."""
    if isinstance(layer, W8A8Linear):
        return f"{name} (per-token {layer.act_bits}-bit, path {layer.path})"
    if isinstance(layer, FbgemmDynamicLinear):
        bits = 7 if layer.reduce_range else 8
        return f"{name} ({cls.description}: fbgemm, per-tensor {bits}-bit)"
    return f"{name} ({cls.description})"


def bench_linear(device: str = "cpu", shapes=((4096, 4096), (1024, 4096)),
                 batches=(1, 8, 64, 256, 512), repeat: int = 5, progress=None) -> list[dict]:
    """Quantized linear layers against the float layer they replace, per batch size.

    ``shapes`` are ``(in_features, out_features)``. The baseline is float32 ``nn.Linear`` on
    the CPU and a bfloat16 copy of it on a GPU. Each W8A8 row names its int8 path and also
    records ``ratio_to_torch_engine``: fbgemm's (PyTorch's own int8 engine) time over its own,
    the two timed against each other in one alternated run.
    """
    torch.manual_seed(0)
    records = []
    for k, n in shapes:
        linear = nn.Linear(k, n).to(device).eval()
        if device.startswith("cuda"):
            base_layer, base_name = linear.to(torch.bfloat16), "bf16 nn.Linear"
        else:
            base_layer, base_name = linear, "fp32 nn.Linear"
        layers = []
        for name, cls in _linear_cases(device):
            layer = cls.from_float(nn.Linear(k, n).to(device).eval())
            layers.append((_layer_label(name, cls, layer), layer))
        for batch in batches:
            x = torch.randn(batch, k, device=device)
            xb = x.to(next(base_layer.parameters()).dtype)
            rows = {}
            for name, layer in layers:
                if progress:
                    progress(f"{name[:12]} {k}x{n} b{batch}")
                with torch.no_grad():
                    seconds, base_s = time_paired(lambda layer=layer, x=x: layer(x),
                                                  lambda xb=xb, bl=base_layer: bl(xb),
                                                  repeat=repeat, device=device)
                rec = _gemm_record(name, device, (batch, k, n), batch, seconds, base_name,
                                   base_s)
                rec["path"] = getattr(layer, "path", None)
                rows[type(layer)] = rec
                records.append(rec)
            if W8A8Linear in rows and FbgemmDynamicLinear in rows:
                # Timed against each other, alternated, rather than as a quotient of two
                # runs against fp32 taken at different moments: the ratio the issue asks for.
                ours, engine = (next(lay for _, lay in layers if isinstance(lay, cls))
                                for cls in (W8A8Linear, FbgemmDynamicLinear))
                with torch.no_grad():
                    t_ours, t_engine = time_paired(lambda f=ours, x=x: f(x),
                                                   lambda f=engine, x=x: f(x),
                                                   repeat=repeat, device=device)
                rows[W8A8Linear]["ratio_to_torch_engine"] = t_engine / t_ours
    return records


def _swap_linears(module: nn.Module, make) -> int:
    swapped = 0
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, make(child))
            swapped += 1
        else:
            swapped += _swap_linears(child, make)
    return swapped


def bench_minilm(repeat: int = 5, progress=None) -> list[dict]:
    """all-MiniLM-L6-v2 encoding the corpus: float32 against int8 linear layers (CPU)."""
    from .data import corpus
    from .models import minilm

    sentences = corpus()
    reference = minilm()
    cases = [("W8A8Linear everywhere", W8A8Linear.from_float)]
    if FbgemmDynamicLinear.available("cpu"):
        cases.insert(0, ("FbgemmDynamicLinear everywhere", FbgemmDynamicLinear.from_float))
    records = []
    for name, make in cases:
        if progress:
            progress(f"minilm {name[:20]}")
        model = minilm()
        swapped = _swap_linears(model, make)

        def encode(m):
            return m.encode(sentences, batch_size=64, convert_to_tensor=True,
                            show_progress_bar=False)

        with torch.no_grad():
            seconds, base_s = time_paired(lambda model=model: encode(model),
                                          lambda: encode(reference), repeat=repeat, warmup=1)
        rec = _record(f"MiniLM encode, {name}", "cpu", (len(sentences),), seconds,
                      "MiniLM encode, fp32", base_s, 0, batch=64)
        del rec["gb_per_s"]
        rec["linear_layers_swapped"] = swapped
        records.append(rec)
    return records


def _fmt_extra(r: dict) -> str:
    if "gb_per_s" in r:
        return f"{r['gb_per_s']:.1f} GB/s"
    if "gflop_per_s" in r:
        return f"{r['gflop_per_s']:.1f} GFLOP/s"
    return ""


def _markdown(records: list[dict], machine: str) -> str:
    lines = [
        f"Machine: {machine}",
        "",
        "Ratio: baseline time over case time (above 1 means faster than the baseline), both "
        "medians of runs alternated with each other in this run.",
        "",
        "| suite | case | device | shape | seconds | throughput | baseline | baseline seconds "
        "| ratio | ratio to torch fused / engine |",
        "|---|---|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in records:
        fused = r.get("ratio_to_torch_fused", r.get("ratio_to_torch_engine"))
        lines.append(
            f"| {r['suite']} | {r['case']} | {r['device']} | {'x'.join(map(str, r['shape']))} | "
            f"{r['seconds'] * 1e3:.2f} ms | {_fmt_extra(r)} | {r['baseline']} | "
            f"{r['baseline_seconds'] * 1e3:.2f} ms | {r['ratio']:.2f} | "
            f"{'' if fused is None else f'{fused:.2f}'} |"
        )
    return "\n".join(lines) + "\n"


def _plot(records: list[dict], out: Path, machine: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    kernels = [r for r in records if r["suite"] == "kernels"]
    if kernels:
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(kernels) + 1.2))
        ax.barh([f"{r['case']} ({r['device']})" for r in kernels],
                [r["gb_per_s"] for r in kernels], color="tab:blue")
        ax.invert_yaxis()
        ax.set_xlabel("GB/s of float32 input (higher is better)")
        ax.set_title(f"64 MiB tensor, {machine}", fontsize=9)
        fig.tight_layout()
        fig.savefig(out / "kernels.png", dpi=100)
        plt.close(fig)
        written.append(out / "kernels.png")
    linear = [r for r in records if r["suite"] == "linear"]
    for device in sorted({r["device"] for r in linear}):
        rows = [r for r in linear if r["device"] == device]
        shapes = sorted({tuple(r["shape"][1:]) for r in rows})
        fig, axes = plt.subplots(1, len(shapes), figsize=(5 * len(shapes), 3.6), squeeze=False)
        for ax, shape in zip(axes[0], shapes, strict=True):
            for case in dict.fromkeys(r["case"] for r in rows):
                pts = [(r["batch"], r["ratio"]) for r in rows
                       if r["case"] == case and tuple(r["shape"][1:]) == shape]
                ax.plot(*zip(*pts, strict=True), marker="o", label=case)
            ax.axhline(1.0, color="k", lw=0.8)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("batch")
            ax.set_ylabel(f"speed-up over {rows[0]['baseline']}")
            ax.set_title(f"{shape[0]} -> {shape[1]} on {device}", fontsize=9)
        axes[0][0].legend(fontsize=7)
        fig.suptitle(machine, fontsize=8)
        fig.tight_layout()
        path = out / f"linear_{device}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


SUITES = ("kernels", "gemm", "linear", "minilm", "gptq")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Measure quantcourse kernels on this machine.")
    parser.add_argument("suites", nargs="*", metavar="SUITE",
                        help=f"all (default) or any of {', '.join(SUITES)}")
    parser.add_argument("--out", type=Path, default=Path("build/bench"))
    parser.add_argument("--repeat", type=int, default=15, help="repeats of the kernels suite")
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--compile", action="store_true",
                        help="add the same formula fused by torch.compile (compiles for about "
                             "20 s on first use; needs a C++ compiler)")
    parser.add_argument("--small", action="store_true",
                        help="small shapes and few repeats: a smoke run of a few seconds")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.suites) - {"all", *SUITES})
    if unknown:
        parser.error(f"unknown suite(s) {', '.join(unknown)}; choose from all, {', '.join(SUITES)}")
    suites = list(SUITES) if not args.suites or "all" in args.suites \
        else list(dict.fromkeys(args.suites))
    if args.small:
        args.mib, args.repeat = min(args.mib, 4), min(args.repeat, 3)

    from tqdm import tqdm

    env = environment_report()
    machine = f"{env['cpu']}, {env['cpu_cores']} cores, {env['torch_threads']} torch threads, " \
              f"torch {env['torch']}" + (f", {', '.join(env['cuda_devices'])}"
                                         if env["cuda_devices"] else "")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    jobs = []
    for suite in suites:
        for device in devices if suite != "minilm" else ["cpu"]:
            jobs.append((suite, device))
    records: list[dict] = []
    with tqdm(total=len(jobs), desc="bench", unit="suite") as bar:
        for suite, device in jobs:
            def progress(name, suite=suite, device=device):
                bar.set_postfix_str(f"{suite}/{device}: {name}"[:50])
            if suite == "kernels":
                new = bench_kernels(device, args.mib, args.repeat, progress=progress,
                                    compile_=args.compile)
            elif suite == "gemm":
                shapes = ((1, 4096, 4096), (512, 4096, 4096))
                if device.startswith("cuda"):
                    shapes += ((8192, 8192, 8192),)
                if args.small:
                    shapes = ((1, 256, 256), (64, 256, 256))
                new = bench_gemm(device, shapes, repeat=3 if args.small else 7,
                                 progress=progress)
            elif suite == "linear":
                if args.small:
                    new = bench_linear(device, shapes=((512, 256),), batches=(1, 16), repeat=2,
                                       progress=progress)
                else:
                    new = bench_linear(device, progress=progress)
            elif suite == "gptq":
                new = bench_gptq(device, shape=(256, 512) if args.small else (4096, 4096),
                                 rows=256 if args.small else 2048, progress=progress)
            else:
                try:
                    new = bench_minilm(progress=progress)
                except ImportError as exc:
                    tqdm.write(f"minilm suite skipped: {exc}")
                    new = []
            for r in new:
                r["suite"] = suite
            records += new
            bar.update()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(
        {"machine": machine, "environment": env, "records": records}, indent=2))
    table = _markdown(records, machine)
    (args.out / "results.md").write_text(table)
    plots = _plot(records, args.out, machine)
    print(table)
    for r in records:
        if r["case"].startswith("qc symmetric"):
            print(f"qparams + quantize reach {r['ratio']:.2f}x the throughput of a plain copy"
                  f" on {r['device']} (target: at least 0.5x)")
        if "compile_seconds" in r:
            print(f"fused by torch.compile: {r['ratio']:.2f}x of copy after "
                  f"{r['compile_seconds']:.0f} s of compilation")
    names = ", ".join(p.name for p in plots)
    print(f"wrote {args.out}/results.json, results.md" + (f", {names}" if names else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
