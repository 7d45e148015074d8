"""`score promote`: moving a registry alias to the version another alias names, with who, when and why recorded
as tags on that version, against a fresh project's own MLflow sqlite store."""

from __future__ import annotations

import datetime as dt
import getpass
import json

from mlflow import MlflowClient

from jobs.spec.load import load_tracking
from jobs.tracking.registry import register_model
from jobs.tracking.tags import Tag


def _register(project, *files_and_aliases: tuple[str, str]) -> None:
    """Register each model file of the test models as the next version of `churn`, under its alias."""
    tracking = load_tracking(project.root, environ=project.env)
    for version, (file, alias) in enumerate(files_and_aliases, start=1):
        assert register_model(project.models / file, "churn", alias, tracking) == str(version)


def test_promote_moves_the_alias_and_tags_the_version(fresh_project):
    project = fresh_project
    _register(project, ("model.onnx", "champion"), ("model_torchscript.pt", "challenger"))

    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    proc = project.score(
        "promote", "churn", "--from", "challenger", "--to", "champion", "--reason", "better AUC", "--json"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = json.loads(proc.stdout)
    user = getpass.getuser()
    assert {k: v for k, v in done.items() if k != "at"} == {
        "name": "churn",
        "version": "2",
        "from": "challenger",
        "to": "champion",
        "previous_version": "1",
        "by": user,
        "reason": "better AUC",
    }
    assert before <= dt.datetime.fromisoformat(done["at"]) <= dt.datetime.now(dt.UTC)
    assert (
        f"promoted models:/churn/2 from @challenger to @champion (was version 1) by {user}: better AUC" in proc.stderr
    )

    client = MlflowClient(project.tracking_uri, registry_uri=project.tracking_uri)
    assert str(client.get_model_version_by_alias("churn", "champion").version) == "2"  # an int from a sqlite store
    assert str(client.get_model_version_by_alias("churn", "challenger").version) == "2"  # an int from a sqlite store
    tags = client.get_model_version("churn", "2").tags
    assert {k: v for k, v in tags.items() if k.startswith("score.")} == {
        Tag.PROMOTED_TO: "champion",
        Tag.PROMOTED_FROM: "challenger",
        Tag.PROMOTED_BY: user,
        Tag.PROMOTED_AT: done["at"],
        Tag.PROMOTED_REASON: "better AUC",
        Tag.REPLACED_VERSION: "1",
    }
    assert not any(k.startswith("score.") for k in client.get_model_version("churn", "1").tags)

    # Again, to where it already is: allowed, and recorded.
    again = project.score("promote", "churn", "--from", "champion", "--to", "champion", "--reason", "re-checked")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout == ""
    assert "promoted models:/churn/2 from @champion to @champion (unchanged)" in again.stderr
    assert str(client.get_model_version_by_alias("churn", "champion").version) == "2"  # an int from a sqlite store
    tags = client.get_model_version("churn", "2").tags
    assert (tags[Tag.PROMOTED_FROM], tags[Tag.PROMOTED_REASON], tags[Tag.REPLACED_VERSION]) == (
        "champion",
        "re-checked",
        "2",
    )


def test_unknown_alias_or_model_is_a_usage_error_naming_what_exists(fresh_project):
    project = fresh_project
    _register(project, ("model.onnx", "champion"))

    proc = project.score("promote", "churn", "--from", "challenger", "--to", "champion", "--reason", "better AUC")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "model 'churn' has no alias @challenger; its aliases: @champion (version 1)" in proc.stderr
    assert "Traceback" not in proc.stderr

    proc = project.score("promote", "nope", "--from", "challenger", "--to", "champion", "--reason", "better AUC")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "no registered model 'nope'" in proc.stderr

    client = MlflowClient(project.tracking_uri, registry_uri=project.tracking_uri)
    assert str(client.get_model_version_by_alias("churn", "champion").version) == "1"  # an int from a sqlite store
    assert not any(k.startswith("score.") for k in client.get_model_version("churn", "1").tags)


def test_reason_is_required(project):
    proc = project.score("promote", "churn", "--from", "challenger", "--to", "champion")
    assert proc.returncode == 2
    assert "--reason" in proc.stderr
