"""Workshop agendas from the notebooks themselves (``python -m tools.agenda``; the site puts
the result into the instructor guide).

Per notebook: the self-study time of ``tools.time_estimate``, the full-mode run time recorded
in the committed notebook (its cells' execution timestamps), the quick-mode run time where
``make test`` has left ``build/quick/`` on this machine, and its exercises. In a workshop one
exercise per notebook is done live and the others are homework, so a notebook's live time is
its self-study time less ``MIN_PER_EXERCISE`` per exercise left as homework. The half-day and
full-day agendas take notebooks in the order of ``PATHS`` until the next one would not fit the
teaching time, with a break once ``BREAK_EVERY`` minutes would pass without one.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from .notebook_utils import ROOT, notebook_paths, read
from .time_estimate import MIN_PER_EXERCISE, estimate

# notebook numbers in the order a workshop takes them (missing ones are skipped)
PATHS = {
    "half day (3 h 30 teaching)": (210, ["00", "02", "03", "04"]),
    "full day (6 h 30 teaching)": (390, ["00", "02", "03", "04", "05", "09", "10", "14"]),
}
BREAK_EVERY, BREAK_MIN, START = 120, 15, dt.datetime(2026, 1, 1, 9, 0)
LUNCH_AFTER, LUNCH_MIN = 150, 45  # the first break after this much teaching is lunch
_EXERCISE = re.compile(r"^###\s+Exercise\s+(\d+):\s*(.+)$", re.M)


def run_seconds(path: Path) -> float | None:
    """Seconds from the first cell's start to the last cell's reply, from a notebook's
    execution metadata (None when it carries none)."""
    stamps = []
    for cell in read(path).cells:
        ex = cell.get("metadata", {}).get("execution", {})
        for key in ("iopub.execute_input", "shell.execute_reply"):
            if key in ex:
                stamps.append(dt.datetime.fromisoformat(ex[key].replace("Z", "+00:00")))
    return (max(stamps) - min(stamps)).total_seconds() if stamps else None


def exercises(path: Path) -> list[str]:
    text = "\n".join(c.source for c in read(path).cells if c.cell_type == "markdown")
    return [f"{n}: {title.strip()}" for n, title in _EXERCISE.findall(text)]


def rows() -> list[dict]:
    out = []
    for path in notebook_paths():
        est, ex = estimate(path), exercises(path)
        quick = ROOT / "build" / "quick" / path.name
        out.append({
            "nb": path.name[:2], "path": path,
            "title": read(path).cells[0].source.splitlines()[0].split("·", 1)[-1].strip(),
            "minutes": est.minutes,
            "live": est.minutes - MIN_PER_EXERCISE * max(len(ex) - 1, 0),
            "full_s": run_seconds(path),
            "quick_s": run_seconds(quick) if quick.exists() else None,
            "exercises": ex,
        })
    return out


def _s(seconds: float | None) -> str:
    return "not measured here" if seconds is None else f"{seconds:.0f} s"


def markdown() -> str:
    table = rows()
    by_nb = {r["nb"]: r for r in table}
    lines = ["| nb | notebook | self-study | live | full run | quick run | done live |",
             "|---|---|---|---|---|---|---|"]
    for r in table:
        live = r["exercises"][0] if r["exercises"] else "none"
        lines.append(f"| {r['nb']} | [{r['title']}]({r['path'].name}) | {r['minutes']} min | "
                     f"{r['live']} min | {_s(r['full_s'])} | {_s(r['quick_s'])} | "
                     f"exercise {live} |")
    total = sum(r["minutes"] for r in table)
    lines += ["", f"Self-study, the whole course: {total} minutes ({total / 60:.1f} hours)."]
    for name, (budget, order) in PATHS.items():
        lines += ["", f"**{name}**", "", "| start | item | minutes |", "|---|---|---|"]
        clock, used, since_break, lunch = START, 0, 0, False
        for nb in order:
            r = by_nb.get(nb)
            if r is None:
                continue
            if used + r["live"] > budget:
                break
            if since_break + r["live"] > BREAK_EVERY and since_break:
                name, minutes = (("lunch", LUNCH_MIN) if used >= LUNCH_AFTER and not lunch
                                 else ("break", BREAK_MIN))
                lunch = lunch or name == "lunch"
                lines.append(f"| {clock:%H:%M} | {name} | {minutes} |")
                clock += dt.timedelta(minutes=minutes)
                since_break = 0
            lines.append(f"| {clock:%H:%M} | {r['nb']} {r['title']} | {r['live']} |")
            clock += dt.timedelta(minutes=r["live"])
            used += r["live"]
            since_break += r["live"]
        lines.append(f"| {clock:%H:%M} | end ({used} minutes of teaching) | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown())
