"""execution/nvml.py, the one home of NVML: devices for `plan`, samples for telemetry."""

from __future__ import annotations

import pytest

from winnow.execution import nvml
from winnow.execution.nvml import GpuSample, Nvml, NvmlUnavailable


def _nvml_works() -> bool:
    try:
        Nvml.open().close()
    except NvmlUnavailable:
        return False
    return True


HAS_NVML = _nvml_works()


@pytest.mark.skipif(HAS_NVML, reason="NVML works here: the unavailable path is not reachable")
def test_without_nvml_devices_says_why_and_lists_none() -> None:
    devices, note = nvml.devices()
    assert devices == []
    with pytest.raises(NvmlUnavailable) as caught:
        Nvml.open()
    assert note == str(caught.value) == f"no GPU information: {caught.value.reason}"
    assert "NVMLError" not in note  # a sentence, not an exception's name


@pytest.mark.parametrize(
    ("cause", "reason"),
    [
        (ImportError("No module named 'pynvml'"), "nvidia-ml-py is not installed"),
        (type("NVMLError_LibraryNotFound", (Exception,), {})(), "no NVIDIA driver on this machine"),
        (type("NVMLError_DriverNotLoaded", (Exception,), {})(), "no NVIDIA driver on this machine"),
        (RuntimeError("odd"), "NVML did not start (odd)"),
    ],
)
def test_why_nvml_is_missing_reads_as_a_sentence(cause: BaseException, reason: str) -> None:
    assert nvml.plainly(cause) == reason


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_NVML, reason="needs a CUDA GPU with NVML")
def test_with_nvml_devices_are_listed_and_sampled() -> None:
    devices, note = nvml.devices()
    assert note is None and devices
    assert [d["index"] for d in devices] == list(range(len(devices)))
    assert all(d["name"] and d["memory_total_bytes"] > 0 for d in devices)
    session = Nvml.open()
    try:
        sample = session.sample(0)
    finally:
        session.close()
    assert isinstance(sample, GpuSample)
    assert 0 <= sample.utilization_percent <= 100
    assert 0 <= sample.memory_used_bytes <= devices[0]["memory_total_bytes"]
