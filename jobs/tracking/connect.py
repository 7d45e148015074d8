"""Connecting to the MLflow tracking store (also the model registry). Only the driver talks to it.

The embedded default is a sqlite file in the project's state folder. A fresh sqlite store is created and
migrated under a file lock, because several processes opening it at once can leave a half-migrated schema.
The experiment is marked as holding model runs (MLflow's `mlflow.experimentKind`), not GenAI traces.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock

from jobs.errors import UsageError
from jobs.spec.schema import TrackingSpec
from jobs.tracking.tags import EXPERIMENT_KIND, MODEL_DEVELOPMENT

if TYPE_CHECKING:
    from mlflow import MlflowClient


def connect(tracking: TrackingSpec) -> MlflowClient:
    """Point MLflow at the configured store, initialise it safely, and make sure the experiment exists."""
    import mlflow  # 1.1 s to import: a model resolved from a file needs no MLflow until the run records
    from mlflow import MlflowClient

    # MLflow also exports these URIs to os.environ, where the next spec loaded in this process (another
    # project's job in the same notebook) would read them as its own ${MLFLOW_TRACKING_URI}: keep them out.
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(tracking.uri)
    mlflow.set_registry_uri(tracking.uri)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    with _init_lock(tracking.uri):  # creating the client creates and migrates a new sqlite store
        try:
            client = MlflowClient(tracking.uri, registry_uri=tracking.uri)
            experiment = client.get_experiment_by_name(tracking.experiment)
            if experiment is None:
                client.create_experiment(
                    tracking.experiment,
                    artifact_location=tracking.artifact_location,
                    tags={EXPERIMENT_KIND: MODEL_DEVELOPMENT},
                )
            elif EXPERIMENT_KIND not in experiment.tags:  # one made before, or by another tool; a kind chosen stays
                client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND, MODEL_DEVELOPMENT)
        except Exception as exc:
            if type(exc).__name__ in ("MlflowException", "RestException", "OperationalError"):
                raise UsageError(f"tracking store {tracking.uri} is not usable: {exc}") from None
            raise
    mlflow.set_experiment(tracking.experiment)
    return client


class _init_lock:
    """A file lock beside a sqlite store; a no-op for servers, which serialise themselves."""

    def __init__(self, uri: str) -> None:
        self.lock = None
        if uri.startswith("sqlite:///"):
            db = Path(uri.removeprefix("sqlite:///"))
            db.parent.mkdir(parents=True, exist_ok=True)
            self.lock = FileLock(str(db) + ".lock", timeout=300)

    def __enter__(self) -> None:
        if self.lock:
            self.lock.acquire()

    def __exit__(self, *exc) -> None:
        if self.lock:
            self.lock.release()
