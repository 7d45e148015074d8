"""Model runtimes inside the actors: ONNX Runtime and torch, on the GPU when the actor holds one.

Both take numpy feeds keyed by model input name and return numpy outputs keyed by output name.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np


class Runtime(Protocol):
    device: str

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True, eq=False)
class ModelFiles:
    """A model file plus its ONNX external-data files (location as the model names it -> contents).

    Shipped to the actors as one object-store value: workers need neither the registry nor a shared disk.
    The contents are uint8 arrays, which Ray hands to an actor as read-only views of its node's one shared
    copy: an actor then holds only its session's weights (with `bytes`, each actor first made a private
    copy of the whole model: twice the model's size per actor while loading, measured).
    """

    model: np.ndarray
    external: tuple[tuple[str, np.ndarray], ...] = ()

    @classmethod
    def read(cls, path: str | Path, external: tuple[str, ...] = ()) -> "ModelFiles":
        folder = Path(path).parent
        return cls(np.fromfile(path, dtype=np.uint8), tuple((loc, np.fromfile(folder / loc, dtype=np.uint8))
                                                               for loc in external))


def open_runtime(kind: str, model: bytes | ModelFiles, suffix: str, output_names: list[str], use_gpu: bool,
                 threads: int) -> Runtime:
    files = model if isinstance(model, ModelFiles) else ModelFiles(np.frombuffer(model, dtype=np.uint8))
    if kind == "onnx":
        return OnnxRuntime(files, use_gpu, threads)
    return TorchRuntime(files.model.tobytes(), suffix, output_names, use_gpu, threads)


class OnnxRuntime:
    def __init__(self, files: ModelFiles, use_gpu: bool, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        if files.external:
            # The model is loaded from bytes, so ORT has no folder to find its side files in: hand them over.
            names, buffers = zip(*files.external)
            options.add_external_initializers_from_files_in_memory(list(names), list(buffers),
                                                                   [len(b) for b in buffers])
        providers = ["CPUExecutionProvider"]
        if use_gpu:
            # Ask for CUDA only when the actor really holds a GPU: elsewhere it logs a loud load failure.
            if hasattr(ort, "preload_dlls"):
                ort.preload_dlls()
            providers.insert(0, "CUDAExecutionProvider")
        # The graph itself is small when its weights are external; ORT copies the weights it is handed.
        self.session = ort.InferenceSession(files.model.tobytes(), options, providers=providers)
        self.device = "cuda" if "CUDAExecutionProvider" in self.session.get_providers() else "cpu"
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(None, feeds)))


def load_torch_module(model: bytes, suffix: str, device: str = "cpu"):
    """A TorchScript module or a `torch.export` program (`.pt2`), and its positional input names."""
    import torch

    if suffix == ".pt2":
        program = torch.export.load(io.BytesIO(model))
        names = [s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
        module = program.module()
        return module.to(device) if device != "cpu" else module, names
    module = torch.jit.load(io.BytesIO(model), map_location=device)
    module.eval()
    return module, [a.name for a in module.forward.schema.arguments[1:]]


class TorchRuntime:
    def __init__(self, model: bytes, suffix: str, output_names: list[str], use_gpu: bool, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        self.module, self.input_names = load_torch_module(model, suffix, self.device)
        self.output_names = output_names

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])).to(self.device) for n in self.input_names]
        with torch.inference_mode():
            result = self.module(*args)
        results = result if isinstance(result, (tuple, list)) else (result,)
        return {name: t.detach().cpu().numpy() for name, t in zip(self.output_names, results)}
