"""The MLflow tags and headline metrics of a scoring run, named once: the run's flow writes them
(`jobs.tracking.records`, `jobs.commands.summary`), the orphan reaper and `score lineage` read the tags back, and so
can anyone searching the tracking store.
"""

from __future__ import annotations


class Tag:
    """The tags of a scoring run's MLflow run (`score.*`), which searches and `score lineage` read, and those
    `score promote` sets on a model version."""

    JOB = "score.job"
    TABLE = "score.table"
    TABLE_URI = "score.table_uri"
    QUARANTINE_TABLE_URI = "score.quarantine_table_uri"
    PARTITIONS = "score.partitions"
    MODEL_URI = "score.model_uri"
    MODEL_NAME = "score.model_name"
    MODEL_VERSION = "score.model_version"
    MODEL_SHA256 = "score.model_sha256"
    CONTRACT = "score.contract"
    CONTRACT_SHA256 = "score.contract_sha256"
    INPUT_FINGERPRINT = "score.input_fingerprint"
    CODE_VERSION = "score.code_version"
    CODE_SHA256 = "score.code_sha256"
    RUN_KEY = "score.run_key"
    ROLE = "score.role"  # what kind of run, as its name says: "" (a plain run), or backfill, ad-hoc, dev, challenger
    SPEC_ENV = "score.spec_env"  # the names of the environment variables the spec references, never their values
    TABLE_VERSION = "score.table_version"  # the run's last commit
    TABLE_VERSIONS = "score.table_versions"  # every commit, comma-separated (output.commit_every)
    QUARANTINE_VERSION = "score.quarantine_version"
    INPUT_WATERMARK = "score.input_watermark"
    DEVICES = "score.devices"  # rows by the device the model ran on, as JSON
    CHALLENGER_URI = "score.challenger_uri"  # model.challenger, as configured
    CHALLENGER_VERSION = "score.challenger_version"
    CHALLENGER_SHA256 = "score.challenger_sha256"
    KIND = "score.kind"  # "model-registration" on the MLflow run that registered a model version
    REGISTERED_SHA256 = "model.sha256"  # on that run: the sha256 of the files it registered
    ERROR = "error"
    ERROR_TYPE = "error.type"
    DRIVER = "score.driver"  # host, pid and start time of the run's driver process (`jobs.tracking.orphans`)
    READ_VERSIONS = "score.read_versions"  # table URI -> the version the run's plan read (null: a new table)
    # On a registered model version, by `score promote`: who moved which alias to it, when and why.
    PROMOTED_TO = "score.promoted_to"  # the alias now naming the version
    PROMOTED_FROM = "score.promoted_from"  # the alias that named it first
    PROMOTED_BY = "score.promoted_by"  # the user who ran `score promote`
    PROMOTED_AT = "score.promoted_at"  # UTC, ISO 8601, seconds
    PROMOTED_REASON = "score.promoted_reason"
    REPLACED_VERSION = "score.replaced_version"  # the version the alias named before ("" if none)


# MLflow's own experiment tag for what an experiment holds; its UI writes it when someone picks the experiment's type.
# Ours hold model runs, not GenAI traces. (MLflow 3.17's UI decides its landing page by its own switch instead:
# README, "Data scientist: the runs in MLflow's UI".)
EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_DEVELOPMENT = "custom_model_development"


class Metric:
    """A run's headline metrics. MLflow charts a metric in the section named by its key up to the last `/`, and
    lists the sections in code-point order with the unprefixed ones ("Model metrics") last: capitalised sections
    come before the lowercase detail (`seconds/*`, `drift/*`, ...), so a run's page opens on these."""

    CHECKED = "Contract/rows_checked"
    FAILED = "Contract/rows_failed"
    EXPECTATIONS_FAILED = "Contract/expectations_failed"
    ROWS_IN = "Rows/in"
    ROWS_SCORED = "Rows/scored"
    ROWS_QUARANTINED = "Rows/quarantined"
    ROWS_REUSED = "Rows/reused"
    DURATION = "Run/duration_s"
    ROWS_PER_S = "Run/rows_per_s"
    TABLE_VERSION = "Run/table_version"
    FRESHNESS_LAG = "Run/freshness_lag_s"
    COLUMNS_DRIFTED = "Run/columns_drifted"
    COST = "Run/cost"
    COST_PER_MILLION_ROWS = "Run/cost_per_million_rows"
