"""The demo's embedding stage: CPU path, device selection, and CPU/GPU agreement.

This machine has no GPU. The CUDA path is exercised with a stand-in for CuPy
that computes with NumPy, which proves the plumbing (model uploaded once,
results copied back, the same math) but not CUDA itself; run the gpu-marked
benchmark on a GPU machine for that.
"""

from __future__ import annotations

import sys
import types

import demo
import numpy as np
import pyarrow as pa
import pytest

TEXTS = ["Ray actors process Arrow batches", "", None, "a" * 400, "curation pipeline at scale"]


def batch() -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({"id": list(range(len(TEXTS))), "text": TEXTS})


def embed(stage: demo.Embed) -> np.ndarray:
    stage.setup()
    out = stage.process(batch())
    return np.asarray(out.column("embedding").flatten()).reshape(len(TEXTS), stage.dim)


def test_cpu_embedding_is_normalised_and_deterministic():
    a = embed(demo.Embed(device="cpu"))
    b = embed(demo.Embed(device="auto"))
    norms = np.linalg.norm(a, axis=1)
    assert np.allclose(norms[[0, 3, 4]], 1.0, atol=1e-5) and norms[1] == norms[2] == 0
    assert np.array_equal(a, b)  # no CuPy here: auto runs the same CPU math


def test_device_choice_is_reported_and_cuda_without_a_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # CuPy not installed
    stage = demo.Embed(device="auto")
    stage.setup()
    stage.process(batch())
    assert stage.batch_metrics() == {"device": "cpu"}
    with pytest.raises(RuntimeError, match=r"winnow\[gpu\]"):
        demo.Embed(device="cuda").setup()
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        demo.Embed(device="tpu").setup()


def _numpy_cupy() -> types.ModuleType:
    fake = types.ModuleType("cupy")
    fake.asarray = lambda a: np.asarray(a, dtype=np.float32).copy()  # a "device" copy
    fake.asnumpy = lambda a: np.asarray(a)
    fake.maximum = np.maximum
    fake.linalg = np.linalg
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1))
    return fake


def test_gpu_path_agrees_with_cpu_within_the_stated_tolerance(monkeypatch):
    cpu = embed(demo.Embed(device="cpu"))
    monkeypatch.setitem(sys.modules, "cupy", _numpy_cupy())
    monkeypatch.setattr(demo, "_nvml_handle", lambda: None)
    stage = demo.Embed(device="auto")
    gpu = embed(stage)
    assert stage.batch_metrics()["device"] == "cuda"
    assert stage._gpu_proj is not None  # the model was uploaded once, in setup()
    assert np.max(np.abs(gpu - cpu)) <= demo.GPU_TOLERANCE
