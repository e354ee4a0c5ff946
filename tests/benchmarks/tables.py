"""Where a benchmark's table goes: ``save(text, name)`` writes it to tests/benchmarks/results/NAME and, on the
device machine (``OUT`` set), to $OUT/NAME too, so it comes back from the call."""

from __future__ import annotations

import os
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def save(text: str, name: str) -> Path:
    """``text`` (a newline added) as results/NAME (".md" added when NAME has no suffix); returns that path."""
    name = name if name.endswith(".md") else name + ".md"
    path = RESULTS / name
    path.write_text(text + "\n")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], name).write_text(text + "\n")
    return path
