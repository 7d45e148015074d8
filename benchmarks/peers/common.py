"""What every contender shares: the task file, the model and the per-batch work, from `jobs.tools.bare_loop`.

That module is the bare loop itself (the yardstick `score bench` uses too) and imports only pyarrow, numpy and
the model's runtime, so it imports in each peer's own virtual environment: `run.py` puts the repository on the
peers' PYTHONPATH (their workers inherit it). The peers differ in how they read, schedule and write; the
per-batch work is this one function for all of them, so that a ratio measures the engine, not a conversion.
"""

from __future__ import annotations

import sys
from pathlib import Path

from jobs.tools.bare_loop import Task, open_model, score

__all__ = ["Task", "args", "open_model", "score"]


def args() -> tuple[Task, Path, list[str]]:
    """`SCRIPT TASK.json OUT_DIR [OPTIONS...]`: every peer's command line."""
    if len(sys.argv) < 3:
        sys.exit(f"usage: {sys.argv[0]} TASK.json OUT_DIR [OPTIONS...]")
    return Task.load(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
