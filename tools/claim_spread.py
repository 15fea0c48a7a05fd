"""Measure how far each notebook claim moves across CPU families (`make claims-spread`).

Runs the notebooks in full mode natively, under the emulated second CPU family (AVX2, no
VNNI, no AVX-512) and under ATen's plain C++ kernels (SSE4.1 oneDNN), each in a fresh kernel
whose environment selects the kernels, then tabulates every claim: the committed value, the
value in each run, the spread (largest minus smallest of all of them) and the claim's tol.
A tol below 3x the spread is flagged: widen it (DESIGN sections 7 and 9).

python -m tools.claim_spread [--reuse] [notebooks/NN_name.ipynb ...]
Writes build/spread/<config>/*.ipynb and build/spread/claims.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import nbformat

from quantcourse.claims import claims_in_outputs

from .notebook_utils import ROOT, notebook_paths

# The same switches as the Makefile's EMULATE (kept in one place there for `make`; a test
# checks that both agree).
CONFIGS = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2", "MKL_CBWR": "COMPATIBLE"},
    "default": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
                "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2", "MKL_CBWR": "COMPATIBLE"},
}
MARGIN = 3.0


def notebook_claims(path: Path) -> dict[str, dict]:
    """Every claim recorded in a notebook's outputs, by name."""
    found: dict[str, dict] = {}
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "code":
            for name, record in claims_in_outputs(cell.get("outputs", [])).items():
                if name in found:
                    raise ValueError(f"{path.name}: claim {name!r} recorded in two cells")
                found[name] = record
    return found


def execute(config: str, paths: list[Path], out: Path) -> bool:
    env = {**os.environ, **CONFIGS[config]}
    cmd = [sys.executable, "-m", "tools.run_notebooks", "--mode", "full", "--out", str(out),
           *map(str, paths)]
    print(f"== {config}: {' '.join(f'{k}={v}' for k, v in CONFIGS[config].items()) or '(as is)'}",
          flush=True)
    return subprocess.run(cmd, env=env, cwd=ROOT).returncode == 0


def table(paths: list[Path], base: Path) -> tuple[str, int]:
    lines = ["| notebook | claim | committed | " + " | ".join(CONFIGS) +
             " | spread | tol | tol / spread |", "|" + "---|" * (len(CONFIGS) + 6)]
    flagged = 0
    for path in paths:
        committed = notebook_claims(path)
        runs = {}
        for config in CONFIGS:
            run = base / config / path.name
            runs[config] = notebook_claims(run) if run.exists() else {}
        for name, rec in committed.items():
            values = [rec["value"]] + [runs[c][name]["value"] for c in CONFIGS if name in runs[c]]
            spread = max(values) - min(values)
            ratio = rec["tol"] / spread if spread else float("inf")
            bad = ratio < MARGIN or len(values) < len(CONFIGS) + 1
            flagged += bad
            cells = [f"{runs[c][name]['value']:.6g}" if name in runs[c] else "missing"
                     for c in CONFIGS]
            lines.append(f"| {path.stem[:2]} | {name} | {rec['value']:.6g} | " + " | ".join(cells)
                         + f" | {spread:.3g} | {rec['tol']:.3g} | "
                         + ("exact" if not spread else f"{ratio:.1f}") + (" **!**" if bad else "")
                         + " |")
    return "\n".join(lines) + "\n", flagged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reuse", action="store_true", help="tabulate the last runs only")
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help="comma-separated subset of " + ", ".join(CONFIGS))
    parser.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args(argv)
    paths = [p.resolve() for p in args.notebooks] or notebook_paths()
    base = ROOT / "build" / "spread"
    ok = True
    if not args.reuse:
        for config in args.configs.split(","):
            ok &= execute(config, paths, base / config)
    text, flagged = table(paths, base)
    base.mkdir(parents=True, exist_ok=True)
    (base / "claims.md").write_text(text)
    print(text)
    print(f"{flagged} claim(s) flagged (tol < {MARGIN:g}x spread, or missing from a run); "
          f"table in {base / 'claims.md'}")
    return 0 if ok and not flagged else 1


if __name__ == "__main__":
    sys.exit(main())
