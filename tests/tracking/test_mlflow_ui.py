"""MLflow's UI as a data scientist reads it: a real `mlflow server` on 127.0.0.1 over the store and artifacts of a
project's real runs (a backfill from the CLI, a plain run, an ad-hoc sample, a dev run), read by headless Chromium
(`tests/browser.py`). The tests assert on the pages' text, never on pixels, and save their screenshots under the
module's temporary folder (`docs/mlflow-run.png` is such a picture, of a `score init` project's runs).

Without /usr/bin/chromium (Debian's `chromium`: `make test` installs it where it runs as root) they skip, saying so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests import servers
from tests.browser import CHROMIUM, Chromium
from tests.conftest import DAYS, ROWS_PER_DAY, Project
from tests.stages.test_quarantine import break_rows

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs headless Chromium at /usr/bin/chromium: apt-get install chromium (make test)"
)

FIRST, LAST = DAYS[0].isoformat(), DAYS[-1].isoformat()
BACKFILL = f"churn_scores ds={FIRST}..{LAST} [backfill]"
PLAIN = f"churn_scores ds={LAST}"
ADHOC = f"churn_try ds={LAST} [ad-hoc, 500 rows]"
DEV = f"churn_scores_dev ds={LAST} [dev]"
# The run pages open MLflow 3.17's "Model training" side: its own landing page is the GenAI one, whatever the
# experiment's kind (README: "Data scientist: the runs in MLflow's UI")
ML = "workflowType=machine_learning"


@dataclass
class UI:
    url: str  # the UI's experiment page: <server>/#/experiments/<id>
    project: Project
    runs: dict[str, dict]  # run name -> the `--json` summary of the run
    shots: Path  # screenshots

    def page(self, path: str = "") -> str:
        return f"{self.url}{path}?{ML}"


@pytest.fixture(scope="module")
def ui(tmp_path_factory, models_dir):
    """Four runs of one project, MLflow's server over their store (started while they run), and one browser."""
    root = tmp_path_factory.mktemp("mlflow-ui")
    project = Project(root / "project", models_dir)
    break_rows(project)  # three rows of the newest day fail the contract
    job = project.job(
        "churn_scores",
        contract={"suite": "data_contracts/customers.json", "on_failure": "quarantine"},
        engine__inline_max_rows=1_000_000,  # small runs stay in the driver: no Ray to start
    )
    backend = project.root / ".score" / "mlflow.db"
    backend.parent.mkdir(parents=True)
    MlflowClient(project.tracking_uri).search_experiments()  # the store made and migrated once, before the server
    with servers.mlflow_server(root / "logs", backend, {}, wait=False) as server:
        proc, backfill = project.score_json("run", str(job), "-p", "all")  # the CLI: its MLflow sidecar records
        assert backfill["status"] == "succeeded", proc.stderr[-3000:]
        runs = {BACKFILL: backfill}
        for name, options in (
            (PLAIN, {"partitions": "latest", "force": True}),
            (ADHOC, {"limit": 500, "table": "churn_try"}),
            (DEV, {"partitions": "latest", "overrides": ("output.table=churn_scores_dev",)}),
        ):
            code, summary = project.run(job, **options)
            assert code == 0, summary.get("error")
            runs[name] = summary
        server.wait()
        experiment = MlflowClient(project.tracking_uri).get_experiment_by_name("scoring")
        browser = Chromium()
        try:
            yield UI(f"{server.uri}/#/experiments/{experiment.experiment_id}", project, runs, root), browser
        finally:
            browser.close()


def test_the_experiment_is_marked_as_model_development_and_lists_every_run_by_name(ui):
    page, browser = ui
    experiment = MlflowClient(page.project.tracking_uri).get_experiment_by_name("scoring")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"

    text = browser.open(page.page("/runs"), [*page.runs, "4 matching runs"])
    assert "Run Name" in text and "Duration" in text
    browser.evaluate(  # the assistant panel, open on a first visit, would take a quarter of the picture
        "document.querySelector('[data-component-id=\"mlflow.assistant.chat_panel.close\"]')?.click()"
    )
    browser.wait_for(list(page.runs))
    browser.screenshot(page.shots / "mlflow-runs.png")

    client = MlflowClient(page.project.tracking_uri)
    for name, summary in page.runs.items():
        run = client.get_run(summary["run_id"])
        assert run.info.run_name == name
        assert run.data.tags["score.role"] == {BACKFILL: "backfill", PLAIN: "", ADHOC: "ad-hoc", DEV: "dev"}[name]
        assert run.data.tags["mlflow.source.name"] == "conf/jobs/churn_scores.yaml"
        # the run's own time: from when `run_job` began to its end (MLflow used to start it seconds late)
        seconds, reported = (run.info.end_time - run.info.start_time) / 1000, summary["duration_s"]
        assert reported - 0.5 <= seconds <= reported + 2, (name, seconds, reported)


def test_a_run_page_shows_the_counts_first_and_no_metric_per_expectation(ui):
    page, browser = ui
    summary = page.runs[PLAIN]  # the table's second run: drift measured against the first
    text = browser.open(page.page(f"/runs/{summary['run_id']}"), [PLAIN, "Rows/scored", "About this run"])
    browser.screenshot(page.shots / "mlflow-run.png")
    assert f"Scores {ROWS_PER_DAY:,} rows of" in text  # the run's description
    metrics = text[text.index("Metrics (") : text.index("Parameters (")]
    names = [line for line in metrics.splitlines() if "/" in line]
    assert names[:3] == ["Contract/rows_checked", "Contract/rows_failed", "Contract/expectations_failed"]
    headline = ["Rows/in", "Rows/scored", "Rows/quarantined", "Run/duration_s", "Run/rows_per_s"]
    assert all(names.index(h) < names.index("seconds/plan") < names.index("drift/age") for h in headline), names
    assert not [n for n in names if n.startswith("contract_failed")]
    assert "Rows/quarantined\n3\n" in metrics and "Contract/rows_failed\n3\n" in metrics
    assert "Source\nchurn_scores.yaml" in text

    text = browser.open(page.page(f"/runs/{summary['run_id']}/model-metrics"), ["Contract\n(3)", "Rows\n(4)"])
    browser.screenshot(page.shots / "mlflow-run-metrics.png")
    sections = [line for line in text.splitlines() if line in ("Contract", "Rows", "Run", "busy_seconds", "drift")]
    assert sections == ["Contract", "Rows", "Run", "busy_seconds", "drift"], sections  # MLflow's order: capitals first


def test_the_contract_report_lists_failing_expectations_first_in_the_artifact_pane_and_alone(ui):
    page, browser = ui
    summary = page.runs[BACKFILL]
    browser.open(page.page(f"/runs/{summary['run_id']}/artifacts/contract/report.html"), ["report.html", "Path"])
    pane = browser.evaluate("document.querySelector('iframe')?.getBoundingClientRect().width") or 0
    assert 400 < pane < 1000  # MLflow shows it in a sandboxed frame (its text is read below, from the file)
    browser.screenshot(page.shots / "mlflow-report-pane.png")

    folder = MlflowClient(page.project.tracking_uri).download_artifacts(
        summary["run_id"], "contract", str(page.shots / "artifacts")
    )
    assert json.loads(Path(folder, "report.json").read_text())["rows_failed"] == 3
    for width in (640, 1300):  # a narrow pane, and the page opened alone
        with Chromium(width=width, height=1200) as alone:
            text = alone.open(Path(folder, "report.html").as_uri(), ["Passing expectations"])
            alone.screenshot(page.shots / f"report-{width}.png")
            assert alone.evaluate("document.documentElement.scrollWidth") <= width  # no sideways scrolling
        assert "3 rows failed; 2 of 33 expectations failed" in text
        order = [text.index(h) for h in ("Failing expectations (2)", "Per partition", "Passing expectations (31)")]
        assert order == sorted(order), text[:2000]
        failing = text[order[0] : order[1]]
        assert failing.index("age") < failing.index("region")  # most rows failed first
        assert "atlantis" in failing and ("150, 7" in failing or "7, 150" in failing)


def test_the_experiment_opens_on_its_runs_once_model_training_is_picked(ui):
    """What the README tells a data scientist. MLflow 3.17 reads its own switch, not the experiment's kind, to choose
    the landing page: a browser that never picked "Model training" lands on the GenAI overview."""
    page, browser = ui
    browser.open(page.url, ["GenAI", "Model training"])  # the module's browser has a fresh profile: never picked
    if "workflowType=genai" in browser.evaluate("location.hash"):
        browser.evaluate(
            "Array.from(document.querySelectorAll('[role=button]')).find(e => e.innerText === 'Model training').click()"
        )
        browser.wait_for(["matching runs"])
    browser.open(page.url, ["4 matching runs", *page.runs])  # remembered: the plain link opens the run list
    assert "/runs?" in browser.evaluate("location.hash")
