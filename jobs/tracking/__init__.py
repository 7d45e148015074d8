"""MLflow, where runs are recorded: the connection (`connect`), the model registry (`registry`), a run's records
(`records`) and tags (`tags`), which code ran (`code_version`), and runs whose driver died (`orphans`).

Layer: above `models` and `tables` (the registry resolves model files; records describe tables and draw their
charts; orphans clean up table files), beside `stages`, independent of it. MLflow itself is imported only where
it is used: it takes 1.1 s.
"""

import os

# MLflow reads these when it is first imported, by whichever module of this package imports it first.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
