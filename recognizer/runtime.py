"""Load TFLite models with whichever runtime is installed.

The post runs `ai-edge-litert` (the maintained successor of tflite-runtime; wheels for Python
3.10-3.14 on aarch64, numpy 1 and 2). `tflite-runtime` 2.14 is accepted too (Python <= 3.11,
numpy < 2): the shipped models are exported with settings both runtimes load, and a test reads
the same plates with both. TensorFlow is never imported here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# In order of preference. The name is what `runtime=` in the config and the tests use.
RUNTIMES = {
    "ai_edge_litert": "ai_edge_litert.interpreter",
    "tflite_runtime": "tflite_runtime.interpreter",
}


class RuntimeMissing(RuntimeError):
    pass


class ModelError(RuntimeError):
    pass


def available_runtimes() -> list[str]:
    names = []
    for name, module in RUNTIMES.items():
        try:
            importlib.import_module(module)
        except ImportError:
            continue
        names.append(name)
    return names


def _interpreter_module(runtime: str | None):
    names = [runtime] if runtime else list(RUNTIMES)
    errors = []
    for name in names:
        if name not in RUNTIMES:
            raise RuntimeMissing(f"unknown TFLite runtime {name!r}; choose one of {', '.join(RUNTIMES)}")
        try:
            return name, importlib.import_module(RUNTIMES[name])
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
    raise RuntimeMissing(
        "no TFLite runtime is installed (" + "; ".join(errors) + "). "
        "Install ai-edge-litert (pip install -r requirements.txt) or tflite-runtime."
    )


@dataclass
class Model:
    """One loaded .tflite model with fixed input and output tensors."""

    path: Path
    runtime: str
    interpreter: Any  # the Interpreter of whichever TFLite runtime is installed

    def __post_init__(self):
        self.inputs = self.interpreter.get_input_details()
        self.outputs = self.interpreter.get_output_details()

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.inputs[0]["shape"])

    @property
    def input_dtype(self):
        return self.inputs[0]["dtype"]

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Run one batch. Float input is quantised here when the model takes int8/uint8."""
        detail = self.inputs[0]
        if detail["dtype"] in (np.int8, np.uint8) and x.dtype not in (np.int8, np.uint8):
            scale, zero = detail["quantization"]
            info = np.iinfo(detail["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        x = np.ascontiguousarray(x, dtype=detail["dtype"])
        self.interpreter.set_tensor(detail["index"], x)
        self.interpreter.invoke()
        outs = []
        for d in self.outputs:
            y = self.interpreter.get_tensor(d["index"])
            if d["dtype"] in (np.int8, np.uint8):
                scale, zero = d["quantization"]
                y = (y.astype(np.float32) - zero) * scale
            outs.append(y)
        return outs


def load_model(path: str | Path, threads: int = 1, runtime: str | None = None) -> Model:
    """Build the interpreter once; callers keep the Model for the life of the process."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    name, module = _interpreter_module(runtime)
    try:
        interp = module.Interpreter(model_path=str(path), num_threads=int(threads))
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"{name} cannot load {path.name}: {exc}") from exc
    return Model(path=path, runtime=name, interpreter=interp)
