"""Model runtimes inside the actors: ONNX Runtime and torch, on the GPU when the actor holds one.

Both take numpy feeds keyed by model input name and return numpy outputs keyed by output name, in float32
whatever precision the model computes in (`scoring.precision`, see jobs.models.precision). Each says which
`device` it scores on. An actor given a GPU never falls back to the CPU silently: a CPU-only build fails it.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from jobs.errors import RuntimeFailure

GPU_INSTALL_HINT = "install the GPU build: `make install ACCEL=gpu` (see the Makefile)"


class GpuUnavailableError(RuntimeFailure):
    """An actor that holds a GPU got a runtime that cannot use it (a CPU-only build, missing CUDA libraries)."""


class Runtime(Protocol):
    device: str  # "cpu", or e.g. "cuda:0 (NVIDIA H200)"

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True, eq=False)
class ModelFiles:
    """A model file plus its ONNX external-data files (location as the model names it -> contents), and the
    precision to score it in (an ONNX fp16/int8 model arrives already converted).

    Shipped to the actors as one object-store value: workers need neither the registry nor a shared disk.
    The contents are uint8 arrays, which Ray hands to an actor as read-only views of its node's one shared
    copy: an actor then holds only its session's weights (with `bytes`, each actor first made a private
    copy of the whole model: twice the model's size per actor while loading, measured).
    """

    model: np.ndarray
    external: tuple[tuple[str, np.ndarray], ...] = ()
    precision: str = "fp32"

    @classmethod
    def read(cls, path: str | Path, external: tuple[str, ...] = (), precision: str = "fp32") -> ModelFiles:
        folder = Path(path).parent
        return cls(
            np.fromfile(path, dtype=np.uint8),
            tuple((loc, np.fromfile(folder / loc, dtype=np.uint8)) for loc in external),
            precision,
        )


def open_runtime(
    kind: str,
    model: bytes | ModelFiles,
    suffix: str,
    output_names: list[str],
    use_gpu: bool,
    threads: int,
    spinning: bool = True,
) -> Runtime:
    """`spinning: False` for a runtime that shares its cores with other stages (the scoring actors): ONNX
    Runtime's idle threads then sleep instead of spin-waiting for the next operator, leaving the CPU to the
    read and write tasks (MLP job on 2 cores: 33.8 s against 36.7 s with spinning, one run each)."""
    files = model if isinstance(model, ModelFiles) else ModelFiles(np.frombuffer(model, dtype=np.uint8))
    if kind == "onnx":
        return OnnxRuntime(files, use_gpu, threads, spinning)
    return TorchRuntime(files.model.tobytes(), suffix, output_names, use_gpu, threads, files.precision)


def cuda_device_name(index: int = 0) -> str:
    """`cuda:N (GPU name)`: the name from torch when this process already imported it, else nvidia-smi.

    Ray restricts an actor to its GPUs through CUDA_VISIBLE_DEVICES, so device N is the N-th visible one;
    nvidia-smi counts all of the machine's GPUs and is asked for the visible one's index or UUID.
    """
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    physical = visible[index].strip() if index < len(visible) else str(index)
    try:
        name = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", physical],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        name = ""
    return f"cuda:{index} ({name})" if name else f"cuda:{index}"


class OnnxRuntime:
    """An ONNX Runtime session. On the GPU, inputs are copied to the device through OrtValues and outputs are
    bound on the device and copied back once per batch (IO binding), instead of ORT staging every tensor."""

    def __init__(self, files: ModelFiles, use_gpu: bool, threads: int, spinning: bool = True) -> None:
        import onnxruntime as ort  # optional: the cpu or gpu extra installs it, and a torch model never needs it

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if files.external:
            # The model is loaded from bytes, so ORT has no folder to find its side files in: hand them over.
            names, buffers = zip(*files.external)
            options.add_external_initializers_from_files_in_memory(
                list(names), list(buffers), [len(b) for b in buffers]
            )
        providers = ["CPUExecutionProvider"]
        if use_gpu:
            # Ask for CUDA only when the actor really holds a GPU: elsewhere it logs a loud load failure.
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise GpuUnavailableError(
                    f"the scoring actor holds a GPU, but onnxruntime {ort.__version__} is a CPU-only build "
                    f"(providers: {', '.join(ort.get_available_providers())}); nothing was scored on the CPU "
                    f"instead: {GPU_INSTALL_HINT}, which installs onnxruntime-gpu in place of onnxruntime"
                )
            if hasattr(ort, "preload_dlls"):
                ort.preload_dlls()
            providers.insert(0, "CUDAExecutionProvider")
        # The graph itself is small when its weights are external; ORT copies the weights it is handed.
        self.session = ort.InferenceSession(files.model.tobytes(), options, providers=providers)
        self.output_names = [o.name for o in self.session.get_outputs()]
        # Where IO binding puts inputs and outputs: (device type, device id), or None for plain session.run.
        self.bind_device: tuple[str, int] | None = None
        # ORT cannot bind string tensors (nor make OrtValues of them): such models run through session.run.
        self.bindable = all(i.type != "tensor(string)" for i in self.session.get_inputs())
        self.device = "cpu"
        if use_gpu:
            if "CUDAExecutionProvider" not in self.session.get_providers():
                raise GpuUnavailableError(
                    f"the scoring actor holds a GPU, but onnxruntime-gpu {ort.__version__} could not load its CUDA "
                    "provider (its CUDA 13 / cuDNN libraries are missing or do not match the driver: the "
                    "'Failed to load library' line in the worker log names the one) and would have scored on the "
                    f"CPU: install those libraries (e.g. the nvidia-*-cu13 wheels), or {GPU_INSTALL_HINT}"
                )
            self.bind_device = ("cuda", 0)
            self.device = cuda_device_name(0)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.bind_device is None or not self.bindable:
            return dict(zip(self.output_names, self.session.run(None, feeds)))
        return self._run_bound(feeds, *self.bind_device)

    def _run_bound(self, feeds: dict[str, np.ndarray], device: str, device_id: int) -> dict[str, np.ndarray]:
        import onnxruntime as ort  # optional (see __init__)

        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_ortvalue_input(
                name, ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value), device, device_id)
            )
        for name in self.output_names:
            binding.bind_output(name, device, device_id)
        self.session.run_with_iobinding(binding)
        return dict(zip(self.output_names, binding.copy_outputs_to_cpu()))


def torch_outputs(result: Any, names: list[str]) -> dict[str, Any]:
    """The tensors of a torch module's `result` that `names` (model.outputs) map: by key or path where every
    name is one ("logits"; "1.0" for the first of a nested tuple's second item), else by position in a flat
    tuple, as TorchScript models return them. Raises ValueError saying what the model returns otherwise."""
    flat = dict(_flatten(result, ""))
    if all(name in flat for name in names):
        return {name: flat[name] for name in names}
    if isinstance(result, dict) or any("." in path for path in flat):
        raise ValueError(
            f"the torch model returns {'a dict' if isinstance(result, dict) else 'nested tuples'} of tensors "
            f"{list(flat)}; model.outputs names {names}: name each output by its key or path"
        )
    items = list(result) if isinstance(result, (tuple, list)) else [result]
    if len(items) < len(names):
        raise ValueError(f"model.outputs maps {len(names)} outputs; the torch model returns {len(items)}")
    picked = dict(zip(names, items))
    other = [name for name, item in picked.items() if not hasattr(item, "dtype")]
    if other:
        raise ValueError(
            f"model.outputs maps {other} by position to items of the torch model's result that are not tensors"
        )
    return picked


def _flatten(result: Any, path: str) -> list[tuple[str, Any]]:
    """(path, tensor) pairs of a module's result: positions of tuples and lists, keys of dicts, joined by "."."""
    if isinstance(result, dict):
        items = [(str(k), v) for k, v in result.items()]
    elif isinstance(result, (tuple, list)):
        items = [(str(i), v) for i, v in enumerate(result)]
    else:
        return [(path or "0", result)] if hasattr(result, "dtype") else []
    return [pair for key, value in items for pair in _flatten(value, f"{path}.{key}" if path else key)]


def load_torch_module(model: bytes, suffix: str, device: str = "cpu"):
    """A TorchScript module or a `torch.export` program (`.pt2`), and its positional input names."""
    import torch  # optional (not a dependency, see the Makefile): only torch models import it

    if suffix == ".pt2":
        program = torch.export.load(io.BytesIO(model))
        names = [s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
        module = program.module()
        return module.to(device) if device != "cpu" else module, names
    module = torch.jit.load(io.BytesIO(model), map_location=device)
    module.eval()
    return module, [a.name for a in module.forward.schema.arguments[1:]]


class TorchRuntime:
    """A torch module. fp16/bf16 run under autocast (weights stay float32, matrix work in reduced precision);
    on the GPU, inputs go through reused pinned host buffers with non-blocking copies."""

    def __init__(
        self, model: bytes, suffix: str, output_names: list[str], use_gpu: bool, threads: int, precision: str = "fp32"
    ) -> None:
        import torch  # optional: only torch models import it

        torch.set_num_threads(threads)
        if use_gpu and not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise GpuUnavailableError(
                f"the scoring actor holds a GPU, but torch {torch.__version__} ({build}) cannot use it "
                "(torch.cuda.is_available() is False); nothing was scored on the CPU instead: "
                f'{GPU_INSTALL_HINT}, with the CUDA build of torch (TORCH_PIP_ARGS="--index-url <CUDA wheel index>")'
            )
        self.device_type = "cuda" if use_gpu else "cpu"
        self.device = cuda_device_name(torch.cuda.current_device()) if use_gpu else "cpu"
        self.torch_device = torch.device("cuda", torch.cuda.current_device()) if use_gpu else torch.device("cpu")
        self.module, self.input_names = load_torch_module(model, suffix, str(self.torch_device))
        self.output_names = output_names
        self.autocast_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
        # TorchScript's optimising executor (its fusers and autocast pass) under autocast crashed the process
        # (SIGSEGV in forward) with a traced 12-layer encoder in bf16 on an H200, torch 2.11: run such a module
        # op by op, where autocast applies as it does in eager mode.
        self.plain_execution = self.autocast_dtype is not None and isinstance(self.module, torch.jit.ScriptModule)
        self._pinned: dict[str, torch.Tensor] = {}

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch  # optional: only torch models import it

        args = [self._to_device(name, feeds[name]) for name in self.input_names]
        autocast = (
            torch.autocast(self.device_type, dtype=self.autocast_dtype)
            if self.autocast_dtype
            else contextlib.nullcontext()
        )
        executor = torch.jit.optimized_execution(False) if self.plain_execution else contextlib.nullcontext()
        with torch.inference_mode(), autocast, executor:
            result = self.module(*args)
        return {name: _to_numpy(t) for name, t in torch_outputs(result, self.output_names).items()}

    def _to_device(self, name: str, array: np.ndarray):
        """On the GPU: copy into this input's pinned buffer (grown when a batch is bigger), then start a
        non-blocking copy to the device. Reusing the buffer is safe: the previous batch's outputs were
        copied back, which waits for every copy queued before them."""
        import torch  # optional: only torch models import it

        if not array.flags.writeable:  # token ids are read-only views of Arrow memory; torch wants its own
            array = array.copy()
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if self.device_type == "cpu":
            return tensor
        pinned = self._pinned.get(name)
        if pinned is None or pinned.dtype != tensor.dtype or pinned.numel() < tensor.numel():
            pinned = self._pinned[name] = torch.empty(tensor.numel(), dtype=tensor.dtype, pin_memory=True)
        staging = pinned[: tensor.numel()].view(tensor.shape)
        staging.copy_(tensor)
        return staging.to(self.torch_device, non_blocking=True)


def _to_numpy(tensor) -> np.ndarray:
    """Reduced-precision floats come back as float32: the dtype the plan bound the output columns to."""
    import torch  # optional: only torch models import it

    tensor = tensor.detach()
    if tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.float()
    return tensor.cpu().numpy()
