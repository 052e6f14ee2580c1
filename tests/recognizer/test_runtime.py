"""The TFLite loader shim: clear errors for missing files, unknown runtimes, and bad models."""

from __future__ import annotations

import numpy as np
import pytest

from recognizer.ocr import DEFAULT_MODEL
from recognizer.runtime import ModelError, RuntimeMissing, available_runtimes, load_model


def test_missing_model_file_is_named(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "nope.tflite")


def test_unknown_runtime_lists_the_choices():
    with pytest.raises(RuntimeMissing, match="ai_edge_litert"):
        load_model(DEFAULT_MODEL, runtime="onnx")


def test_corrupt_model_file_gives_model_error(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelError, match="cannot load"):
        load_model(bad)


@pytest.mark.parametrize("runtime", available_runtimes())
def test_shipped_ocr_model_loads_and_runs(runtime):
    model = load_model(DEFAULT_MODEL, threads=1, runtime=runtime)
    assert model.runtime == runtime
    x = np.random.default_rng(0).random(model.input_shape, dtype=np.float32)
    outs = model.run(x)
    assert all(np.isfinite(o).all() for o in outs)
