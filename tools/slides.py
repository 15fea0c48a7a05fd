"""Every notebook as a reveal.js deck under ``build/slides/`` (``make slides``), offline.

Slides follow the notebook's structure: a ``#``/``##`` heading starts a slide, a ``###``
heading or a figure starts a sub-slide (down arrow), everything else continues the current
one, which scrolls when it is long. The slide types are set on the cells at build time from
the headings, so a new notebook needs no hand-kept slide metadata. reveal.js 4, MathJax 2,
RequireJS and jQuery (what nbconvert's reveal template loads) come from ``tools.vendor`` and
are served next to the decks; ``tools/templates/course_reveal`` drops the template's Mermaid
import, the one script it would still fetch from a CDN.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from nbconvert import SlidesExporter

from .notebook_utils import ROOT, notebook_paths, read
from .vendor import package

ASSETS = {  # npm spec -> (folder under build/slides/_vendor/, the parts the decks load)
    "reveal.js@4.0.2": ("reveal.js", ("dist", "plugin")),
    "mathjax@2.7.7": ("mathjax", ("MathJax.js", "config/TeX-AMS_CHTML-full.js",
                                  "config/Safe.js", "extensions",
                                  "jax/input/TeX", "jax/output/CommonHTML", "jax/element",
                                  "fonts/HTML-CSS/TeX/woff")),
    "requirejs@2.3.7": ("requirejs", ("require.js",)),
    "jquery@3.7.1": ("jquery", ("dist/jquery.min.js",)),
}


def slide_type(cell) -> str:
    """The reveal.js slide type of one cell, from its heading or its outputs."""
    if cell.cell_type == "markdown":
        first = cell.source.lstrip().split("\n", 1)[0]
        if first.startswith(("# ", "## ")):
            return "slide"
        if first.startswith("### "):
            return "subslide"
    if cell.cell_type == "code" and any("image/png" in o.get("data", {})
                                        for o in cell.get("outputs", [])):
        return "subslide"
    return "-"


def exporter() -> SlidesExporter:
    v = "_vendor"
    return SlidesExporter(
        extra_template_basedirs=[str(Path(__file__).parent / "templates")],
        template_name="course_reveal",
        reveal_theme="white",  # its fonts ship with reveal.js; "simple" loads Google Fonts
        reveal_url_prefix=f"{v}/reveal.js",
        mathjax_url=f"{v}/mathjax/MathJax.js?config=TeX-AMS_CHTML-full,Safe",
        require_js_url=f"{v}/requirejs/require.js",
        jquery_url=f"{v}/jquery/dist/jquery.min.js",
        reveal_scroll=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )


def build(out: Path, vendor: Path) -> list[Path]:
    """Write one deck per notebook into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    for spec, (name, parts) in ASSETS.items():
        root = package(spec, vendor)
        for part in parts:
            src, dst = root / part, out / "_vendor" / name / part
            if dst.exists():
                continue
            if src.is_dir():
                shutil.copytree(src, dst)
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, dst)
    decks = []
    export = exporter()
    for path in notebook_paths():
        nb = read(path)
        for cell in nb.cells:
            cell.metadata["slideshow"] = {"slide_type": slide_type(cell)}
            if cell.cell_type == "markdown":
                cell.source = cell.source.replace(".ipynb)", ".slides.html)")
        body, _ = export.from_notebook_node(nb)
        deck = out / f"{path.stem}.slides.html"
        deck.write_text(body)
        decks.append(deck)
    links = "".join(f'<li><a href="{d.name}">{read(p).cells[0].source.splitlines()[0][2:]}</a>'
                    for d, p in zip(decks, notebook_paths(), strict=True))
    (out / "index.html").write_text("<!doctype html><meta charset='utf-8'>"
                                    "<title>quantcourse slides</title><h1>quantcourse slides</h1>"
                                    f"<ol start='0'>{links}</ol>\n")
    return decks


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, nargs="?", default=ROOT / "build" / "slides")
    args = parser.parse_args(argv)
    decks = build(args.out, ROOT / "build" / "vendor")
    print(f"slides: {len(decks)} decks in {args.out} (open {args.out / 'index.html'})")


if __name__ == "__main__":
    main()
