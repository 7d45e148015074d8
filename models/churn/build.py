"""Build the demo churn models from synthetic training data, offline.

- `model.onnx`: a scikit-learn pipeline (scaler + one-hot encoder + logistic regression) converted with
  skl2onnx; one input per column, float and string tensors, outputs `label` and `probabilities` [N, 2].
- `model_torchscript.pt`: a small torch MLP over the numeric features stacked into one [N, k] input,
  standardisation baked in, output [N, 1] churn probability.

Usage: python -m models.churn.build [--out models/churn]
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import numpy as np

from jobs.tools import synthetic

HERE = Path(__file__).parent
TRAIN_ROWS = 20_000


def training_frame(rows: int = TRAIN_ROWS, seed: int = 7):
    table = synthetic.customers(rows, dt.date(2026, 1, 1), seed=seed)
    return table.to_pandas(), synthetic.churn_labels(table, seed=seed)


def build_onnx(path: Path, frame=None, labels=None) -> Path:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    if frame is None:
        frame, labels = training_frame()
    numeric, categorical = synthetic.NUMERIC_FEATURES, synthetic.CATEGORICAL_FEATURES
    x = frame[numeric + categorical].copy()
    x[numeric] = x[numeric].astype(np.float32)
    pipeline = Pipeline(
        [
            (
                "features",
                ColumnTransformer(
                    [
                        ("numeric", StandardScaler(), numeric),
                        ("categorical", OneHotEncoder(handle_unknown="ignore"), categorical),
                    ]
                ),
            ),
            ("classifier", LogisticRegression(max_iter=500)),
        ]
    )
    pipeline.fit(x, labels)
    initial_types = [(c, FloatTensorType([None, 1])) for c in numeric]
    initial_types += [(c, StringTensorType([None, 1])) for c in categorical]
    onx = to_onnx(
        pipeline,
        initial_types=initial_types,
        options={id(pipeline): {"zipmap": False}},
        final_types=None,
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    for output, name in zip(onx.graph.output, ("label", "probabilities")):
        _rename_output(onx, output.name, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(onx.SerializeToString())
    return path


def _rename_output(model, old: str, new: str) -> None:
    for node in model.graph.node:
        node.output[:] = [new if o == old else o for o in node.output]
    for output in model.graph.output:
        if output.name == old:
            output.name = new


def build_torchscript(path: Path, frame=None, labels=None) -> Path:
    import torch

    if frame is None:
        frame, labels = training_frame()
    x = torch.tensor(frame[synthetic.NUMERIC_FEATURES].to_numpy(np.float32))
    y = torch.tensor(labels, dtype=torch.float32).unsqueeze(1)
    torch.manual_seed(0)
    model = _churn_mlp(x.mean(0), x.std(0).clamp_min(1e-6), x.shape[1])
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(150):
        optimiser.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy(model(x), y)
        loss.backward()
        optimiser.step()
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.script(model).save(str(path))
    return path


def _churn_mlp(mean, std, width: int):
    """Defined on demand so that importing this module does not import torch."""
    import torch

    class ChurnMLP(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", mean)
            self.register_buffer("std", std)
            self.layers = torch.nn.Sequential(
                torch.nn.Linear(width, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1), torch.nn.Sigmoid()
            )

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            return self.layers((features - self.mean) / self.std)

    return ChurnMLP()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    frame, labels = training_frame()
    print(build_onnx(args.out / "model.onnx", frame, labels))
    print(build_torchscript(args.out / "model_torchscript.pt", frame, labels))


if __name__ == "__main__":
    main()
