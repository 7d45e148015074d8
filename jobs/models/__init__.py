"""Models: one hashed model file with its signature and its inputs bound to columns (`artifacts`), the runtimes
that score it (`runtimes`: ONNX Runtime and torch, CPU or GPU), reduced precision (`precision`) and text
inputs (`text`: the tokenizer stage and pooling).

Layer: beside `tables`, independent of it; it may import `spec`, `contracts`, `inputs` and the bottom layer
(`storage`, `errors`, `faults`, `columns`). The model registry lives with MLflow, in `jobs.tracking.registry`.
"""
