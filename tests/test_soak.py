"""Soak (marker `slow`, `make test-slow`, about 6 minutes on 2 cores): many short runs back to back, then
different jobs at once, each a real `score run` with its own local Ray. All succeed, the MLflow store
agrees with the tables, no process a run started outlives it, nothing but Ray's session logs is left in
the runs' temporary folder (registry model downloads included), and the memory a run takes does not grow run
over run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import psutil
import pytest
from deltalake import DeltaTable

from jobs.tools.bench import _tree_memory
from tests.conftest import DAYS, ROWS_PER_DAY

pytestmark = pytest.mark.slow
BACK_TO_BACK = 8
CONCURRENT = 3
ROUNDS = 2
GROWTH = 1.3  # the last runs' peak memory against the first runs'


class Watched:
    """One `score run` subprocess: its summary, the peak memory of its process tree, every process seen in it."""

    def __init__(self, project, job: Path, tmpdir: str, *args: str) -> None:
        env = {**project.env, "TMPDIR": tmpdir}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jobs.cli", "run", str(job), "--json", *args],
            cwd=project.root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.root = psutil.Process(self.process.pid)
        self.seen: dict[int, psutil.Process] = {}
        self.peak = 0
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while self.process.poll() is None:
            try:
                for child in self.root.children(recursive=True):
                    self.seen.setdefault(child.pid, child)
            except psutil.NoSuchProcess:
                return
            self.peak = max(self.peak, _tree_memory(self.root))
            threading.Event().wait(0.2)

    def finish(self) -> dict:
        out, err = self.process.communicate(timeout=900)
        self._thread.join()
        assert self.process.returncode == 0, err[-3000:]
        self.leftovers = []  # processes of this run still alive 30 s after it ended: stopped by pid, reported
        for process in psutil.wait_procs(list(self.seen.values()), timeout=30)[1]:
            try:
                self.leftovers.append(process.name())
                process.kill()
            except psutil.NoSuchProcess:
                pass
        return json.loads(out.strip().splitlines()[-1])


@pytest.fixture
def tmpdir_short():
    """A short temporary folder for the runs: Ray's socket paths under it must stay below 108 bytes."""
    folder = tempfile.mkdtemp(prefix="soak", dir="/tmp")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_soak(fresh_project, tmpdir_short):
    project = fresh_project
    runs: list[tuple[Watched, dict]] = []

    registered = project.score(
        "register-model", str(project.models / "model.onnx"), "--name", "churn_soak", "--alias", "champion"
    )
    assert registered.returncode == 0, registered.stderr[-3000:]
    job = project.job("soak_serial", model__uri="models:/churn_soak@champion")  # downloaded by each run
    for _ in range(BACK_TO_BACK):
        watched = Watched(project, job, tmpdir_short, "--force")
        runs.append((watched, watched.finish()))
    serial_peaks = [w.peak for w, _ in runs]

    jobs = [project.job(f"soak_{n}") for n in range(CONCURRENT)]
    for _ in range(ROUNDS):
        started = [
            Watched(project, j, tmpdir_short, "-p", f"ds={DAYS[n].isoformat()}", "--force") for n, j in enumerate(jobs)
        ]
        runs += [(w, w.finish()) for w in started]

    summaries = [s for _, s in runs]
    assert [s["status"] for s in summaries] == ["succeeded"] * len(runs)
    assert all(s["rows_scored"] + s["rows_quarantined"] == ROWS_PER_DAY for s in summaries)
    assert [name for w, _ in runs for name in w.leftovers] == []

    from mlflow import MlflowClient

    client = MlflowClient(project.tracking_uri)
    experiment = client.get_experiment_by_name("scoring")
    tracked = {
        r.info.run_id: r
        for r in client.search_runs([experiment.experiment_id], max_results=1000)
        if "score.job" in r.data.tags
    }  # not register-model's run
    assert set(tracked) == {s["run_id"] for s in summaries}
    for summary in summaries:
        run = tracked[summary["run_id"]]
        assert run.info.status == "FINISHED"
        assert run.data.tags["score.table_version"] == str(summary["table_version"])
        commits = {c.get("score.run_id"): c["version"] for c in DeltaTable(summary["table_uri"]).history()}
        assert commits[summary["run_id"]] == summary["table_version"]
    assert DeltaTable(summaries[BACK_TO_BACK - 1]["table_uri"]).version() == BACK_TO_BACK - 1

    # Ray keeps its session logs (ray/) and ONNX Runtime writes one 51-byte session id (.ses) when imported;
    # nothing of ours stays (each run's download of the registry model went at exit).
    left = sorted(p.name for p in Path(tmpdir_short).iterdir())
    assert set(left) <= {"ray", ".ses"}, left

    first, last = max(serial_peaks[:3]), max(serial_peaks[-3:])
    print(
        f"soak: {len(runs)} runs ({BACK_TO_BACK} back to back, {ROUNDS} rounds of {CONCURRENT} at once); "
        f"peak memory of a serial run, first 3 vs last 3: {first / 2**20:.0f} vs {last / 2**20:.0f} MiB "
        f"({last / first:.2f}x); all peaks MiB: {[round(p / 2**20) for p in serial_peaks]}"
    )
    assert last <= GROWTH * first, serial_peaks
