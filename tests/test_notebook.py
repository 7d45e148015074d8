"""notebooks/adhoc_run.ipynb, executed for real: a Jupyter kernel (this interpreter, ipykernel) started in the
project's notebooks/ folder, as Jupyter starts it, runs every cell; then each cell's output is checked against
the run's Delta table and MLflow run.

The kernel spec is written to a temporary folder, pointing at `sys.executable`: whatever "python3" kernel the
machine has registered elsewhere (another interpreter, or none on a clean clone) is never used.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import nbformat
import pyarrow.compute as pc
from deltalake import DeltaTable
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

from tests.conftest import LAST_DAY, REPO, ROWS_PER_DAY

NOTEBOOK = REPO / "notebooks" / "adhoc_run.ipynb"
TABLE = "churn_scores_adhoc"  # the notebook's default scratch table
CELL_TIMEOUT_S = 300  # a ceiling against a hung kernel, not a speed check
# The notebook's settings: left to its defaults (root found by walking up, newest partition, default table),
# except the job, which is this project's
NOTEBOOK_ENV = ("SCORE_PROJECT", "SCORE_JOB", "SCORE_PARTITION", "SCORE_TABLE")


def _kernel_manager(folder: Path) -> AsyncKernelManager:
    """A kernel manager whose only kernel spec, "python3", runs this interpreter's ipykernel."""
    spec_dir = folder / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (score tests)",
                "language": "python",
            }
        )
    )
    return AsyncKernelManager(
        kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(folder / "kernels")])
    )


def _text(cell) -> str:
    """Everything a code cell printed or returned as text."""
    parts = []
    for output in cell.outputs:
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts.append(output.get("data", {}).get("text/plain", ""))
        elif output.output_type == "error":
            parts.append("\n".join(output.traceback))
    return "\n".join(parts)


def _values(text: str) -> dict[str, str]:
    """The `key: value` lines a cell printed."""
    return {m.group(1).strip(): m.group(2).strip() for m in re.finditer(r"^(\S[^:\n]*): (.*)$", text, re.MULTILINE)}


def test_notebook_is_committed_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)


def test_adhoc_notebook_runs_in_a_kernel_from_the_notebooks_folder(fresh_project, tmp_path):
    project = fresh_project
    # small enough to score in the kernel itself (the fixture's defaults turn the inline engine off)
    project.job("notebook", engine__inline_max_rows=200_000)
    folder = project.root / "notebooks"
    folder.mkdir()
    shutil.copy(NOTEBOOK, folder / NOTEBOOK.name)
    notebook = nbformat.read(folder / NOTEBOOK.name, as_version=4)

    env = {k: v for k, v in project.env.items() if k not in NOTEBOOK_ENV}
    # a path relative to the project root, while the kernel starts in notebooks/
    env["SCORE_JOB"] = "conf/jobs/notebook.yaml"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    client = NotebookClient(
        notebook,
        km=_kernel_manager(tmp_path / "jupyter"),
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(folder)}},
    )
    client.execute(env=env)

    cells = {c.metadata["tags"][0]: c for c in notebook.cells if c.cell_type == "code"}
    assert list(cells) == ["setup", "run", "mlflow", "query", "histogram"]
    for tag, cell in cells.items():
        assert not [o for o in cell.outputs if o.output_type == "error"], f"{tag}: {_text(cell)}"
    day = f"ds={LAST_DAY.isoformat()}"

    setup = _values(_text(cells["setup"]))
    assert Path(setup["started_in"]).resolve() == folder.resolve()
    assert Path(setup["project"]).resolve() == project.root.resolve()
    assert setup["partition"] == day  # the newest partition, computed from the input
    assert setup["table"].startswith(f"{TABLE} ")

    table_uri = str(project.warehouse / TABLE)
    delta = DeltaTable(table_uri)
    run = _values(_text(cells["run"]))
    assert run["status"] == "succeeded", _text(cells["run"])
    assert run["rows_scored"] == str(ROWS_PER_DAY)
    assert run["rows_in"] == str(ROWS_PER_DAY)
    assert run["partitions"] == f"['{day}']"
    assert run["table"] == TABLE
    assert run["table_version"] == str(delta.version()) == "0"
    assert run["engine"] == "inline"
    assert run["model_version"] and run["model_version"] != "None"
    assert not (project.warehouse / "notebook").exists()  # the job's own table is untouched
    # run_job without a console, in a kernel: its own lines and progress on stderr, the summary as HTML
    shown = [o for o in cells["run"].outputs if o.output_type == "stream" and o.name == "stderr"]
    assert any("score: notebook: scoring in this process" in o.text for o in shown), shown
    (table,) = [o.data["text/html"] for o in cells["run"].outputs if "text/html" in o.get("data", {})]
    assert "<strong>score run notebook</strong>: succeeded" in table
    assert (
        f"<th style='text-align:left;padding-right:1em'>table</th><td style='text-align:left'>{TABLE} v0</td>" in table
    )

    tracked = _values(_text(cells["mlflow"]))
    assert tracked["run_id"] == run["run_id"]
    assert tracked["status"] == "FINISHED"
    assert tracked["tag score.table_version"] == run["table_version"]
    assert tracked["tag score.model_version"] == run["model_version"]
    assert tracked["tag score.run_key"] == delta.history(1)[0]["score.run_key"]
    listed = set(re.findall(r"^  (\S+)$", _text(cells["mlflow"]), re.MULTILINE))
    assert {"charts/churn_probability.svg", "contract/report.json", "spec/resolved.yaml", "input/files.json"} <= listed

    scores = delta.to_pyarrow_table(columns=["churn_probability"], filters=[("ds", "=", LAST_DAY.isoformat())])
    expected_mean = pc.mean(scores.column("churn_probability")).as_py()
    queried = _values(_text(cells["query"]))
    assert queried[f"rows {day}"] == str(ROWS_PER_DAY) == str(scores.num_rows)
    mean = float(queried[f"mean churn_probability {day}"])
    assert 0 < mean < 1
    assert abs(mean - expected_mean) < 1e-6

    images = [o for o in cells["histogram"].outputs if "image/svg+xml" in o.get("data", {})]
    assert images, _text(cells["histogram"])
    assert (
        "<svg" in images[0]["data"]["image/svg+xml"]
        and f"{day}: v0 {ROWS_PER_DAY:,} rows" in images[0]["data"]["image/svg+xml"]
    )
    charted = _values(_text(cells["histogram"]))
    assert charted[f"{day} v0"].startswith(f"{ROWS_PER_DAY} rows, mean ")
    charted_mean = float(charted[f"{day} v0"].split("mean ")[1].split(",")[0])
    assert abs(charted_mean - expected_mean) < 1e-6
