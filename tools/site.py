"""Build the course site under ``build/site/`` (``make site``): every notebook rendered from its
stored outputs, the course map, the instructor guide, search, equations, figures.

Notebooks are picked up by their file names (``tools.notebook_utils.notebook_paths``), never
from a hand-kept list. MathJax 3 comes from ``tools.vendor`` and is served by the site, so pages
render equations without a network.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

from . import agenda
from .notebook_utils import ROOT, notebook_paths, read
from .vendor import package

AGENDA_MARK = "<!-- agenda: tools/agenda.py writes it here in the site -->"

MATHJAX = "mathjax@3.2.2"
_KEEP = ("tex-mml-chtml.js", "input", "output", "ui", "a11y", "adaptors", "core.js",
         "loader.js", "startup.js")


def _header(nb) -> dict:
    """Title, time and objectives from a notebook's first cell."""
    src = nb.cells[0].source
    title = src.splitlines()[0].lstrip("# ").strip()
    time = re.search(r"\*\*Time:\*\* about (\d+) minutes", src)
    goals = re.search(r"## Learning objectives\s*\n(.*?)(\n\*\*|\n## |\Z)", src, re.S)
    return {"title": title, "minutes": int(time.group(1)) if time else None,
            "objectives": goals.group(1).strip() if goals else ""}


def _page(nb) -> nbformat.NotebookNode:
    """A notebook as the site shows it: links between notebooks and to the course map fixed."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = cell.source.replace("../README.md#course-map", "index.md#course-map")
            cell.source = re.sub(r"\]\(\.\./README\.md(#[\w-]+)?\)", "](index.md)", cell.source)
    return nb


def index_page(paths: list[Path], extra: list[str]) -> str:
    """The site's front page: what the course is, the course map, and the table of contents."""
    readme = (ROOT / "README.md").read_text().split("\n## ")[0].split("\n", 1)[1].strip()
    rows, total = [], 0
    for path in paths:
        h = _header(read(path))
        total += h["minutes"] or 0
        rows.append(f"| {path.name[:2]} | [{h['title'].split('·', 1)[-1].strip()}]({path.name}) "
                    f"| {h['minutes']} min |")
    toc = "\n".join([p.name for p in paths] + extra)
    return (f"# quantcourse\n\n{readme}\n\n(course-map)=\n## Course map\n\n"
            f"About {total / 60:.0f} hours in all, by the rule the README states.\n\n"
            "| nb | notebook | time |\n|---|---|---|\n" + "\n".join(rows)
            + f"\n\n```{{toctree}}\n:maxdepth: 1\n:caption: Contents\n\n{toc}\n```\n")


def build(out: Path, src: Path, vendor: Path) -> Path:
    """Assemble the Sphinx source in ``src`` and render it into ``out``; returns the index."""
    if src.exists():
        shutil.rmtree(src)
    (src / "_static").mkdir(parents=True)
    paths = notebook_paths()
    for path in paths:
        nbformat.write(_page(read(path)), src / path.name)
    extra = []
    for doc in sorted((ROOT / "docs").glob("*.md")):
        text = doc.read_text().replace(AGENDA_MARK, agenda.markdown())
        (src / doc.name).write_text(text)
        extra.append(doc.name)
    (src / "index.md").write_text(index_page(paths, extra))
    shutil.copy(ROOT / "docs" / "conf.py", src / "conf.py")
    es5 = package(MATHJAX, vendor) / "es5"
    for name in _KEEP:
        item = es5 / name
        target = src / "_static" / "mathjax" / name
        if item.is_dir():
            shutil.copytree(item, target)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(item, target)
    subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-q", "-W", "--keep-going",
                    str(src), str(out)], check=True)
    return out / "index.html"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, nargs="?", default=ROOT / "build" / "site")
    args = parser.parse_args(argv)
    index = build(args.out, ROOT / "build" / "site_src", ROOT / "build" / "vendor")
    print(f"site: {index}")


if __name__ == "__main__":
    main()
