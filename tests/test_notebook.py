"""The notebook in notebooks/ runs top to bottom (its code cells, in order, in one fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def test_adhoc_notebook_runs(fresh_project):
    project = fresh_project
    notebook = json.loads((REPO / "notebooks" / "adhoc_run.ipynb").read_text())
    code = "\n\n".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code")
    job = project.job("notebook_source")
    proc = subprocess.run([sys.executable, "-c", code], cwd=project.root, capture_output=True, text=True,
                          env={**project.env, "SCORE_JOB": str(job), "PYTHONPATH": str(REPO)}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "succeeded 6000 rows -> churn_scores_adhoc version 0" in proc.stdout
