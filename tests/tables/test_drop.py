"""`score drop TABLE`: deletes a table with its twins, refuses while a job of the project reads it (unless
--force), never deletes a table that lies inside a job's input folder; `score tables` hides empty quarantine
twins."""

from __future__ import annotations

import json

from tests.conftest import DAYS, ROWS_PER_DAY

INLINE = ("--set", "engine.inline_max_rows=1000000")


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_drop_deletes_a_table_and_its_twins_once_no_job_reads_it(fresh_project):
    project = fresh_project
    policy = {"suite": "data_contracts/customers.json", "on_failure": "quarantine"}
    job = project.job("dropme", input__partitions="all", output__table="dropme", contract=policy)
    proc, summary = project.score_json("run", str(job), *INLINE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert summary["rows_scored"] == len(DAYS) * ROWS_PER_DAY and summary["rows_quarantined"] == 0

    listed = project.score("tables", "--json")
    assert [t["name"] for t in json.loads(listed.stdout)] == ["dropme", "dropme__profiles"]
    assert "1 empty quarantine table(s) not shown (--all shows them)" in listed.stderr
    everything = json.loads(project.score("tables", "--json", "--all").stdout)
    assert [t["name"] for t in everything] == ["dropme", "dropme__profiles", "dropme__quarantine"]

    reader = project.job("downstream", input__path="warehouse/dropme", output__table="downstream")
    refused = project.score("drop", "dropme")
    assert refused.returncode == 2
    assert f"drop dropme: read by job downstream ({reader})" in refused.stderr and "--force" in refused.stderr
    assert (project.warehouse / "dropme" / "_delta_log").is_dir()

    data_before = _files(project.data)
    proc = project.score("drop", "dropme", "--force", "--json")
    assert proc.returncode == 0, proc.stderr
    dropped = json.loads(proc.stdout)
    assert [(d["table"], d["version"]) for d in dropped["dropped"]] == [
        ("dropme", 0),
        ("dropme__quarantine", 0),
        ("dropme__profiles", 0),
    ]
    assert dropped["readers"] == [str(reader)]
    assert sorted(p.name for p in project.warehouse.iterdir()) == []
    assert _files(project.data) == data_before  # the input is untouched

    again = project.score("drop", "dropme")
    assert again.returncode == 2 and "table dropme: no Delta table at" in again.stderr


def test_drop_never_deletes_a_table_inside_a_jobs_input_folder(fresh_project):
    project = fresh_project
    job = project.job("kept", input__partitions="latest", output__table="kept")
    proc, _ = project.score_json("run", str(job), *INLINE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    wide = project.job("everything", input__path="warehouse", output__table="elsewhere")
    for extra in ((), ("--force",)):
        refused = project.score("drop", "kept", *extra)
        assert refused.returncode == 2
        assert f"lies inside the input folder of job everything ({wide})" in refused.stderr
        assert "never deletes input data" in refused.stderr
    assert (project.warehouse / "kept" / "_delta_log").is_dir()
    named = project.score("drop", str(project.warehouse / "kept"))
    assert named.returncode == 2 and "name a table of the warehouse" in named.stderr
