"""Write build/site/index.html: the course map linking each rendered notebook (`make course`)."""

from __future__ import annotations

import html
import sys
from pathlib import Path

from .notebook_utils import notebook_paths, read


def main(site: str) -> None:
    site_dir = Path(site)
    rows = []
    for path in notebook_paths():
        title = read(path).cells[0].source.splitlines()[0].lstrip("# ").strip()
        page = path.with_suffix(".html").name
        if (site_dir / page).exists():
            rows.append(f'<li><a href="{page}">{html.escape(title)}</a></li>')
    (site_dir / "index.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>quantcourse</title>"
        "<h1>quantcourse: neural-network quantization, measured</h1><ol start='0'>"
        + "".join(rows) + "</ol>\n"
    )
    print(f"site: {site_dir / 'index.html'} ({len(rows)} notebooks)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "build/site")
