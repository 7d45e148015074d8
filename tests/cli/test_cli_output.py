"""`score run --json` prints exactly one JSON object on stdout, whatever happens (issue 8)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROWS_PER_DAY

MARKER = "scored-a-batch-in-a-worker"


def printing_model(path) -> None:
    """A TorchScript model that prints on every batch: Ray relays workers' stdout to the driver."""
    import torch

    class Loud(torch.nn.Module):
        def forward(self, tenure: torch.Tensor) -> torch.Tensor:
            print("scored-a-batch-in-a-worker")
            return tenure * 0.5

    torch.jit.script(Loud()).save(str(path))


def test_worker_output_never_reaches_stdout_in_json_mode(fresh_project, tmp_path):
    """Guards: Ray relayed worker output and raylet warnings to the driver's stdout after the JSON object
    (the redirect to stderr was undone before the process, and Ray's relay, ended)."""
    project = fresh_project
    model = tmp_path / "loud.pt"
    printing_model(model)
    job = project.job(
        "loud",
        model={
            "uri": str(model),
            "runtime": "torch",
            "inputs": {"tenure": "tenure_months"},
            "outputs": {"out": "half_tenure"},
        },
        scoring={"batch_size": 200, "actors": {"min": 1, "max": 2}},
    )
    # Besides the workers' real output, a line written to file descriptor 1 at interpreter exit stands
    # for what Ray's relay thread (or a raylet warning) may print while the driver shuts down.
    script = (
        "import atexit, os, sys\n"
        "atexit.register(lambda: os.write(1, b'(raylet) WARNING: late line at exit\\n'))\n"
        "from jobs.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    # -v: Ray relays the workers' output only when asked (else it stays in Ray's log files)
    proc = subprocess.run(
        [sys.executable, "-c", script, "-v", "run", str(job), "--partitions", "all", "--json"],
        cwd=project.root,
        env=project.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout
    summary = json.loads(lines[0])
    assert summary["rows_scored"] == 3 * ROWS_PER_DAY
    assert MARKER in proc.stderr, "under -v the workers' output is relayed, to stderr"
    assert "late line at exit" in proc.stderr


def test_an_unexpected_failure_still_prints_one_json_object(fresh_project):
    """Guards: only expected failures (ScoreError) printed the JSON summary; a storage error or a bug
    left `--json` consumers with an empty stdout."""
    project = fresh_project
    job = project.job("boom")
    script = (
        "import sys, jobs.commands.run\n"
        "def boom(*args, **kwargs):\n"
        "    raise OSError('storage refused the listing')\n"
        "jobs.commands.run.make_plan = boom\n"
        "from jobs.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, "run", str(job), "--json"],
        cwd=project.root,
        env=project.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout
    summary = json.loads(lines[0])
    assert (summary["status"], summary["exit_code"], summary["job"]) == ("failed", 1, "boom")
    assert summary["error"] == "OSError: storage refused the listing"
    assert "Traceback" in proc.stderr and "score: error: unexpected OSError" in proc.stderr


def test_up_to_date_names_the_model_and_table_version_it_judged(fresh_project):
    """Guards: an `up_to_date` summary named neither the model version nor the table version it was
    judged against."""
    project = fresh_project
    job = project.job("judged", input__partitions="unscored")
    code, first = project.run(job)
    assert code == 0, first["error"]
    code, again = project.run(job)
    assert (code, again["status"]) == (0, "up_to_date")
    assert again["model_version"] == first["model_version"] and again["model_sha256"] == first["model_sha256"]
    assert again["table_version"] == first["table_version"] == 0
    assert f"v{first['table_version']}" in again["message"]
