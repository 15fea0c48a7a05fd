"""How long a notebook takes a learner, by one stated rule (README "How long each notebook takes").

- prose: 120 words a minute (markdown cells; an equation counts as one word);
- code: 15 lines a minute to read and run (non-blank, non-comment lines of teaching cells; a
  self-check cell, whose first line is ``# Self-check``, counts one minute: it is run, not
  studied; exercise cells count in the exercise time);
- exercises: 10 minutes each.

The sum is rounded up to 5 minutes. ``python -m tools.time_estimate`` prints the table; a test
holds every notebook's ``**Time:**`` line and the README's course map to it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from .notebook_utils import notebook_paths, read

WORDS_PER_MIN = 120
CODE_LINES_PER_MIN = 15
MIN_PER_EXERCISE = 10
MIN_PER_SELF_CHECK = 1
_MATH = re.compile(r"\$\$.*?\$\$|\$[^$\n]+\$", re.S)
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'.,-]*")
_EXERCISE = re.compile(r"^###\s+Exercise", re.M)
SOLUTION = "# BEGIN SOLUTION"


@dataclass(frozen=True)
class Estimate:
    words: int
    code_lines: int
    self_checks: int
    exercises: int

    @property
    def minutes(self) -> int:
        raw = (self.words / WORDS_PER_MIN + self.code_lines / CODE_LINES_PER_MIN
               + self.self_checks * MIN_PER_SELF_CHECK + self.exercises * MIN_PER_EXERCISE)
        return 5 * math.ceil(raw / 5)


def estimate(path: Path) -> Estimate:
    """The rule's inputs and result for one notebook."""
    words = code = checks = exercises = 0
    for cell in read(path).cells:
        src = cell.source
        if cell.cell_type == "markdown":
            words += len(_WORD.findall(_MATH.sub(" x ", src)))
            exercises += len(_EXERCISE.findall(src))
        elif cell.cell_type == "code":
            if src.lstrip().startswith("# Self-check"):
                checks += 1
            elif SOLUTION not in src:
                code += sum(1 for line in src.splitlines()
                            if line.strip() and not line.strip().startswith("#"))
    return Estimate(words, code, checks, exercises)


def stated_minutes(path: Path) -> int | None:
    """The ``**Time:** about N minutes`` a notebook's header states."""
    m = re.search(r"\*\*Time:\*\* about (\d+) minutes", read(path).cells[0].source)
    return int(m.group(1)) if m else None


def main() -> None:
    print("| nb | words | code lines | self-checks | exercises | minutes | stated |")
    print("|---|---|---|---|---|---|---|")
    for path in notebook_paths():
        e = estimate(path)
        print(f"| {path.name[:2]} | {e.words} | {e.code_lines} | {e.self_checks} | "
              f"{e.exercises} | {e.minutes} | {stated_minutes(path)} |")


if __name__ == "__main__":
    main()
