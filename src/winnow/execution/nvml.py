"""NVML (nvidia-ml-py) in one place: which GPUs this machine has, and how busy each is.

``winnow plan`` lists the devices (:func:`devices`); a stage actor holding
GPUs samples them (:class:`Nvml`, driven by ``telemetry.GpuSampler``). No
Ray import: ``plan`` runs without a cluster. Without NVML (the package
missing, no driver, no GPU) :meth:`Nvml.open` raises :class:`NvmlUnavailable`,
which callers report as a note, never as an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class NvmlUnavailable(Exception):
    """NVML could not be initialized; ``cause`` is what it raised, ``reason`` says it plainly."""

    def __init__(self, cause: BaseException) -> None:
        self.cause = cause
        self.reason = plainly(cause)
        super().__init__(f"no GPU information: {self.reason}")


def plainly(cause: BaseException) -> str:
    """Why NVML would not start, in a sentence a user can act on."""
    name = type(cause).__name__
    if isinstance(cause, ImportError):
        return "nvidia-ml-py is not installed"
    if "LibraryNotFound" in name or "DriverNotLoaded" in name:
        return "no NVIDIA driver on this machine"
    if "NoPermission" in name:
        return "NVML refused access (check the permissions on /dev/nvidia*)"
    return f"NVML did not start ({cause})"


@dataclass(frozen=True)
class GpuSample:
    """One GPU's utilization and memory in use, at one moment."""

    utilization_percent: int
    memory_used_bytes: int


class Nvml:
    """An initialized NVML session; :meth:`close` shuts it down."""

    def __init__(self, module: Any) -> None:
        self._nvml = module

    @classmethod
    def open(cls) -> Nvml:
        """Initialize NVML.

        Raises:
            NvmlUnavailable: nvidia-ml-py is not installed, or NVML would not
                start (no driver, no GPU, ...).
        """
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ImportError ...
            raise NvmlUnavailable(exc) from exc
        return cls(pynvml)

    def devices(self) -> list[dict[str, Any]]:
        """Every GPU: ``index``, ``name`` and ``memory_total_bytes``."""
        out = []
        for i in range(self._nvml.nvmlDeviceGetCount()):
            handle = self._nvml.nvmlDeviceGetHandleByIndex(i)
            mem = self._nvml.nvmlDeviceGetMemoryInfo(handle)
            name = self._nvml.nvmlDeviceGetName(handle)
            out.append(
                {
                    "index": i,
                    "name": name.decode() if isinstance(name, bytes) else str(name),
                    "memory_total_bytes": int(mem.total),
                }
            )
        return out

    def sample(self, index: int) -> GpuSample:
        """GPU ``index``'s utilization and memory in use now."""
        handle = self._nvml.nvmlDeviceGetHandleByIndex(index)
        util = self._nvml.nvmlDeviceGetUtilizationRates(handle).gpu
        used = self._nvml.nvmlDeviceGetMemoryInfo(handle).used
        return GpuSample(utilization_percent=util, memory_used_bytes=used)

    def close(self) -> None:
        """Shut NVML down."""
        self._nvml.nvmlShutdown()


def devices() -> tuple[list[dict[str, Any]], str | None]:
    """The GPUs NVML sees on this machine, or why it sees none.

    Returns:
        ``(devices, None)``, each device as :meth:`Nvml.devices` gives it, or
        ``([], "no GPU information: <why, plainly>")``.
    """
    try:
        nvml = Nvml.open()
    except NvmlUnavailable as exc:
        return [], str(exc)
    try:
        return nvml.devices(), None
    finally:
        nvml.close()
