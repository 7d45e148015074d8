"""The MLflow model registry: `model.uri` resolved to one concrete, hashed model, `score register-model` and
`score promote`.

A registry URI (`models:/name@alias`, `models:/name/3`) is resolved once, on the driver, to one version whose
files are downloaded and checked against the sha256 recorded when `score register-model` registered them; a
local path is taken as it is. Either way the run scores, and lineage records, exactly one hashed artifact
(`jobs.models.artifacts.model_artifact`).
"""

from __future__ import annotations

import atexit
import datetime as dt
import getpass
import logging
import re
import shutil
import tempfile
from pathlib import Path, PurePosixPath

from jobs.errors import UsageError
from jobs.models.artifacts import (
    MODEL_SUFFIXES,
    ModelArtifact,
    RegisteredVersion,
    external_data,
    model_artifact,
    model_sha256,
)
from jobs.spec.schema import ModelSpec, TrackingSpec
from jobs.tracking.connect import connect
from jobs.tracking.tags import Tag

log = logging.getLogger(__name__)
REGISTRY_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")
SHA256_TAG = "sha256"  # a registered version's tag: the sha256 of its files (`jobs.models.artifacts.model_sha256`)


def resolve_model(spec: ModelSpec, tracking: TrackingSpec) -> ModelArtifact:
    """Resolve a local path or `models:/name@alias|version` once, to a file, a version and a sha256."""
    match = REGISTRY_URI.match(spec.uri)
    if not spec.uri.startswith("models:/"):
        return model_artifact(spec, Path(spec.uri))
    if not match:
        raise UsageError(f"model.uri {spec.uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    path, registered = _download(match["name"], match["alias"], match["version"], tracking)
    return model_artifact(spec, path, registered)


def _download(
    name: str, alias: str | None, version: str | None, tracking: TrackingSpec
) -> tuple[Path, RegisteredVersion]:
    """Download one version; returns its model file and what the registry says of it.

    A version without a `sha256` tag (registered by another tool) cannot be checked: it is accepted with a
    warning, and the downloaded files' sha256 is what lineage records.
    """
    import mlflow  # 1.1 s to import: paid only when a model comes from the registry
    from mlflow.exceptions import MlflowException

    client = connect(tracking)
    uri = f"models:/{name}@{alias}" if alias else f"models:/{name}/{version}"
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as exc:
        raise UsageError(f"model.uri {uri}: not found in the registry at {tracking.uri} ({exc.message})") from None
    folder = Path(tempfile.mkdtemp(prefix=f"score-model-{name}-{mv.version}-"))
    atexit.register(shutil.rmtree, folder, True)  # the run reads it until the end; then it is a leftover
    try:
        mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{mv.version}", dst_path=str(folder))
    except MlflowException as exc:
        raise UsageError(
            f"model.uri {uri}: version {mv.version} has no downloadable artifact ({exc.message})"
        ) from None
    files = sorted(p for p in folder.rglob("*") if p.suffix in MODEL_SUFFIXES)
    if len(files) != 1:
        raise UsageError(
            f"model.uri {uri}: version {mv.version} holds {len(files)} model files {[p.name for p in files]}; "
            f"expected exactly one of {MODEL_SUFFIXES} (plus, for ONNX, its external data files)"
        )
    registered = (mv.tags or {}).get(SHA256_TAG)
    if not registered:
        log.warning(
            "model.uri %s: version %s has no sha256 tag (not registered by `score register-model`), so "
            "its files cannot be checked against what was registered",
            uri,
            mv.version,
        )
    return files[0], RegisteredVersion(name, str(mv.version), registered)


def register_model(path: str | Path, name: str, alias: str | None, tracking: TrackingSpec) -> str:
    """Register a model file as a new version of `name` (logged as a run artifact) and point `alias` at it.

    An ONNX model's external data files are uploaded next to it, and the version is tagged with the sha256
    over all of them, which resolution checks the downloaded files against.
    Idempotent: a model whose sha256 is already a version of `name` reuses that version.
    """
    import mlflow  # 1.1 s to import (see _download)

    path = Path(path)
    if path.suffix not in MODEL_SUFFIXES or not path.is_file():
        raise UsageError(f"{path}: expected an existing model file ending in one of {MODEL_SUFFIXES}")
    external = external_data(path, str(path)) if path.suffix == ".onnx" else ()
    digest = model_sha256(path, external)
    client = connect(tracking)
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(name)
    same = [v for v in client.search_model_versions(f"name = '{name}'") if v.tags.get(SHA256_TAG) == digest]
    if same:
        version = same[0].version
    else:
        with mlflow.start_run(run_name=f"register {name}") as run:
            mlflow.log_artifact(str(path), artifact_path="model")
            for loc in external:
                mlflow.log_artifact(str(path.parent / loc), artifact_path=str(PurePosixPath("model", loc).parent))
            mlflow.set_tags({Tag.KIND: "model-registration", Tag.REGISTERED_SHA256: digest})
        version = client.create_model_version(
            name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id, tags={SHA256_TAG: digest}
        ).version
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return str(version)


def promote_model(name: str, from_alias: str, to_alias: str, reason: str, tracking: TrackingSpec) -> dict:
    """Point `to_alias` at the version `from_alias` names, and tag that version with who did it, when and why.

    The registry keeps no history of its aliases, so the tags (`Tag.PROMOTED_*`) are what answers "who put this
    version in production, and what did it replace". Promoting to an alias already on the version is allowed
    and records the tags again.
    """
    from mlflow.exceptions import MlflowException

    client = connect(tracking)
    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        raise UsageError(f"promote: no registered model {name!r} in {tracking.uri} ({exc.message})") from None
    aliases = dict(model.aliases or {})
    try:
        version = str(client.get_model_version_by_alias(name, from_alias).version)
    except MlflowException:
        known = ", ".join(f"@{a} (version {v})" for a, v in sorted(aliases.items())) or "none"
        raise UsageError(f"promote: model {name!r} has no alias @{from_alias}; its aliases: {known}") from None
    previous = str(aliases[to_alias]) if to_alias in aliases else None
    by = getpass.getuser()
    at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    tags = {
        Tag.PROMOTED_TO: to_alias,
        Tag.PROMOTED_FROM: from_alias,
        Tag.PROMOTED_BY: by,
        Tag.PROMOTED_AT: at,
        Tag.PROMOTED_REASON: reason,
        Tag.REPLACED_VERSION: previous or "",
    }
    for key, value in tags.items():  # before the move: the alias never names a version without its record
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, to_alias, version)
    return {
        "name": name,
        "version": version,
        "from": from_alias,
        "to": to_alias,
        "previous_version": previous,
        "by": by,
        "at": at,
        "reason": reason,
    }
